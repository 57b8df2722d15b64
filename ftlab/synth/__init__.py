"""Synthetic training data: QA pairs from documents, labels from a teacher, paraphrase variants.

Every job talks to a teacher — a `ftlab.infer.backend.ChatBackend`: an OpenAI-compatible server or a local
model — runs its requests concurrently within a bound, and journals its progress so a killed job continues
where it stopped.
"""
