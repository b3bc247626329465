"""Artifact export: the graph jobs of a risk head or a classifier, written one by one, and the manifest that
describes them."""
