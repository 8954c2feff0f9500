"""Evaluation tools that measure the models under the pipeline's own rules (``toonface eval-embedder``,
``toonface eval-detector``)."""
