import cProfile, pstats, sys, tempfile, time, msgspec
from cdp_actors.config import load_workspace
from cdp_actors.profiles.shard import ShardCore
from cdp_actors.schema.records import ShardRecord
from benchmarks.workload import Workload
from benchmarks import audiences as aud

base = load_workspace("configs/workspace.yaml")
derived = aud.derived_workspace(base, "http://127.0.0.1:9/m")
enc = msgspec.json.Encoder()

def records(n):
    w = Workload(2000, seed=3)
    out = []
    now = int(time.time()*1000)
    for i in range(n):
        b = w.batch(now)
        out.append(ShardRecord(seq=i+1, batch_id=i+1, mpid=hash(b["user_identities"]["customer_id"]) & 0xffffffff, input_id=1, received_ms=now, raw=enc.encode(b)))
    return out

recs = records(6000)
for name, cfg in (("plain", base), ("derived", derived)):
    d = tempfile.mkdtemp()
    core = ShardCore(d, 0, cfg, 1)
    t = time.perf_counter()
    prof = cProfile.Profile() if name == sys.argv[1:2] and False else None
    for i in range(0, len(recs), 200):
        core.apply(recs[i:i+200], None)
    el = time.perf_counter() - t
    print(name, f"{len(recs)/el:,.0f} batches/s")
if len(sys.argv) > 1:
    d = tempfile.mkdtemp()
    core = ShardCore(d, 0, derived, 1)
    p = cProfile.Profile(); p.enable()
    for i in range(0, len(recs), 200):
        core.apply(recs[i:i+200], None)
    p.disable()
    pstats.Stats(p).sort_stats("cumulative").print_stats(35)
