"""The text encoder's throughput: sentences/s of ``TextEmbedder.embed`` next to the bare forward pass (used by
bench/compare.py for the product's text column when it runs a text encoder)."""
from __future__ import annotations

import time
from typing import Any, Sequence


def text_embedding_throughput(embedder: Any, sentences: Sequence[str]) -> dict:
    """Sentences/s of ``embed()`` next to the bare ``forward()`` on the same batches (those ``embed()`` runs:
    length-sorted), and of ``forward()`` on batches in the input order (no sorting). One warm-up batch first."""
    sentences = list(sentences)
    batches, empty = embedder.batches(sentences)
    embedder.forward(sentences[:embedder.batch_size])  # warm-up (first-call allocations)
    embedder.empty_embedding()

    t = time.perf_counter()
    embedder.embed(sentences, column="throughput")
    embed_s = time.perf_counter() - t

    t = time.perf_counter()
    for rows in batches:
        embedder.forward([sentences[r] for r in rows])
    forward_s = time.perf_counter() - t

    unsorted = [sentences[i:i + embedder.batch_size] for i in range(0, len(sentences), embedder.batch_size)]
    t = time.perf_counter()
    for batch in unsorted:
        embedder.forward(batch)
    unsorted_s = time.perf_counter() - t

    n, present = len(sentences), len(sentences) - len(empty)
    return {
        "model": embedder.spec.name, "device": embedder.plan.device, "encoder": embedder.describe(),
        "batch_size": embedder.batch_size, "sentences": n, "empty": int(len(empty)),
        "embed_seconds": round(embed_s, 3), "embed_sentences_per_s": round(n / embed_s, 1),
        "forward_seconds": round(forward_s, 3), "forward_sentences_per_s": round(present / forward_s, 1),
        "forward_unsorted_seconds": round(unsorted_s, 3), "forward_unsorted_sentences_per_s": round(n / unsorted_s, 1),
    }
