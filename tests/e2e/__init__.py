"""End-to-end runs through the real `luigi` command, kill-anywhere reruns and the cross-stack check."""
