"""Verification of pre-labels by people: the web page (`toonface annotate serve`), annotators and
the audit trail (annotations/decisions.sqlite), gold items and agreement, and the merge of
decisions into the manifest's `labels` table. See the README, "Verifying pre-labels"."""

from pipeline.annotate.merge import merge_decisions, pending_labels

__all__ = ["merge_decisions", "pending_labels"]
