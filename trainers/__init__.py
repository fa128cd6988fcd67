"""tokenskim training, evaluation and benchmarking: Trainer subclasses, data, metrics, command line."""
