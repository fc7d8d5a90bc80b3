"""Retrieval: embedding extraction, FAISS indexes, ITM reranking."""
