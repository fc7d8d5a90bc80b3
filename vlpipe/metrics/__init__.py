"""Metrics: retrieval recall (ALBEF protocol), classification, VQA, grounding."""
