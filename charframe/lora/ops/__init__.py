"""lora/ops"""
