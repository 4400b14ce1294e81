"""core/classical"""
