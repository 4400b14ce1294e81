"""core/results"""
