"""core/tracking"""
