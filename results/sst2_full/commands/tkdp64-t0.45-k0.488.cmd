tokenskim evaluate --model runs/sst2_knob/tkdp64-k0.488 --task sst2 --max-length 64   # a copy of runs/sst2_full/tkdp64-t0.45 with "keep_threshold": 0.488 in its config.json
