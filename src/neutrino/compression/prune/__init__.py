"""Pruning methods: magnitude, Wanda and SparseGPT, unstructured or N:M (`masks`)."""
