"""htcstream's training package: the Hybrid Task Cascade model, its data, training, evaluation and export."""
