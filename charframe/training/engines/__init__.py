"""training/engines"""
