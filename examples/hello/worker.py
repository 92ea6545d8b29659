"""The demo's worker process: a heartbeat in the unified log every few seconds."""

import itertools
import time

for beat in itertools.count(1):
    print(f"heartbeat {beat}", flush=True)
    time.sleep(5)
