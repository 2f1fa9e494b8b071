"""Training: the loop (loop.py), what a checkpoint holds (checkpoint.py), several processes (dist.py), the metrics
file and sample replies (report.py), the pretrained-base hooks (base.py) and the automatic model size (autosize.py)."""
