"""core/counting"""
