"""Evaluation at any scale: the official attack suite over any image collection, in-process or on Ray."""
