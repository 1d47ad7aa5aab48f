#!/usr/bin/env python3
"""The PyTorch peer of clnorm-bench: the same rows through PyTorch, the way a PyTorch user writes them.

    /usr/bin/python3 bench/torch_peer.py --from clnorm.json --json torch.json [--threads N]

With --from, the rows (op, variant, layout, shape, rotation sets) are those of a clnorm-bench JSON
from the same run; without it, the shape set is built here by the same rule as clnorm-bench
(--shape-set cpu|gpu, --quick). Each row: warm-up, then the median of --runs (default 25) timed
calls, cycling over the same number of input sets as clnorm-bench used.

What is timed, per op (PyTorch's ResNet idiom for the fusions: in-place add, in-place ReLU):
  batchnorm forward_training   F.batch_norm(x, running_mean, running_var, weight, bias, training=True)
  batchnorm forward_inference  the same with training=False
            relu               ... then torch.relu_(out)
            add_relu           ... then out += residual; torch.relu_(out)
  batchnorm backward           torch.autograd.grad(out, (x, weight, bias[, residual]), dy) through
                               the training forward graph above (ReLU / add included), graph built
                               once per set
  layernorm forward            F.layer_norm(x, (cols,), weight, bias, 1e-5)
            residual           h = x + residual; y = F.layer_norm(h, ...)  (returns y and h)
  rmsnorm   forward            F.rms_norm(x, (cols,), weight, 1e-6) where PyTorch has it (2.4 and
                               later); else COMPOSED as x * torch.rsqrt(x.pow(2).mean(-1,
                               keepdim=True) + 1e-6) * weight (Debian's torch 1.13): the output and
                               the JSON ("peer" of each row, "peers") say which
            residual           h = x + residual, then the same on h
  groupnorm forward            F.group_norm(x, groups, weight, bias, 1e-5)
  instancenorm forward         F.instance_norm(x, weight=weight, bias=bias, use_input_stats=True)
  (layer, rms, group, instance) backward
                               torch.autograd.grad(out, (x, weight[, bias]), dy) through the forward
                               above: dx, dweight and dbias, as clnorm-bench computes them
NHWC rows use torch.channels_last tensors; layer and RMS norm rows (layout "-") are (rows, cols). Outputs rotate too: each call's results stay alive for as
many calls as there are input sets, as clnorm-bench's outputs rotate with its inputs (otherwise the
allocator returns the buffer just freed, still in the cache, which flatters PyTorch by up to ~20%
on the CPU). So that those outputs come from a warm heap rather than from fresh pages on every call
(a real cost of PyTorch on CPUs, but not the kernels'), the script re-executes itself with glibc's
MALLOC_MMAP_THRESHOLD_=32 MiB and MALLOC_TRIM_THRESHOLD_=16 GiB unless they are set or
--no-malloc-tuning is given, and warms each row up for at least sets + 1 calls. CPU: wall time with time.perf_counter (CPU ops are
synchronous); CUDA (--device cuda): CUDA events around the call.
The output JSON has the schema of clnorm-bench's (tool "pytorch").
"""
import argparse
import collections
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

MIB = 1 << 20
RESNET50_CHW = [(64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
# op, variant -> (compulsory tensor reads, writes, distinct tensors touched), as in clnorm-bench
BN_OPS = {
    ('forward_training', 'plain'): (1, 1, 2),
    ('forward_training', 'relu'): (1, 1, 2),
    ('forward_training', 'add_relu'): (2, 1, 3),
    ('forward_inference', 'plain'): (1, 1, 2),
    ('forward_inference', 'relu'): (1, 1, 2),
    ('forward_inference', 'add_relu'): (2, 1, 3),
    ('backward', 'plain'): (2, 1, 3),
    ('backward', 'relu'): (3, 1, 4),
    ('backward', 'add_relu'): (3, 2, 5),
}
# the other families: (family, op, variant) -> (reads, writes, tensors), as in clnorm-bench
FN_OPS = {
    ('layernorm', 'forward', 'plain'): (1, 1, 2),
    ('layernorm', 'forward', 'residual'): (2, 2, 4),
    ('layernorm', 'backward', 'plain'): (2, 1, 3),
    ('rmsnorm', 'forward', 'plain'): (1, 1, 2),
    ('rmsnorm', 'forward', 'residual'): (2, 2, 4),
    ('rmsnorm', 'backward', 'plain'): (2, 1, 3),
    ('groupnorm', 'forward', 'plain'): (1, 1, 2),
    ('groupnorm', 'backward', 'plain'): (2, 1, 3),
    ('instancenorm', 'forward', 'plain'): (1, 1, 2),
    ('instancenorm', 'backward', 'plain'): (2, 1, 3),
}
QUICK_VARIANTS = {'plain'}
# issue 5's layer/RMS norm shapes (rows x cols) and group norm's (N, C, H, W), G
ROWS_GPU = [(16384, 4096), (65536, 1024), (4096, 8192)]
ROWS_CPU = [(1024, 4096), (4096, 1024), (256, 16384)]
GROUPS_NCHW, GROUPS = (32, 256, 56, 56), 32
LN_EPS, RMS_EPS = 1e-5, 1e-6


def op_counts(family, op, variant):
    """(compulsory reads, writes, distinct tensors) of a row, or None for rows not run here."""
    if family == 'batchnorm':
        return BN_OPS.get((op, variant))
    return FN_OPS.get((family, op, variant))


def batch_for(gpu, gpu_batch, per_sample):
    """N as clnorm-bench picks it: gpu_batch on a GPU, else the smallest power of two making a
    tensor of at least 16 MB (at most 64 MB)."""
    if gpu:
        return gpu_batch
    n = 1
    while n * per_sample < 16000000 and n * 2 * per_sample <= 64000000:
        n *= 2
    return n


def build_rows(gpu, quick, threshold):
    """The shape set of clnorm-bench's build_shapes() and its rows (without the stage rows)."""
    shapes = []
    for i, (c, h, w) in enumerate(RESNET50_CHW):
        if quick and i not in (0, 4):
            continue
        n = batch_for(gpu, 64, c * h * w * 4)
        shapes.append(((n, c, h, w), 'resnet50' if gpu else 'resnet50-scaled'))
    if not quick:
        for (c, h, w) in RESNET50_CHW:
            dup = any(d[0] == 8 and d[1] == c and d[2] == h for d, _ in shapes)
            if not dup and 8 * c * h * w * 4 <= 64000000:
                shapes.append(((8, c, h, w), 'small-batch'))
    if gpu:
        shapes.append(((32, 2048, 7, 7), 'small-plane'))
    rows = []
    for dims, tag in shapes:
        tensor_bytes = math.prod(dims) * 4
        pool = min(32, math.ceil(threshold / (2 * tensor_bytes)))
        for layout in ('NCHW', 'NHWC'):
            for (op, variant), (_, _, tensors) in BN_OPS.items():
                if quick and variant not in QUICK_VARIANTS:
                    continue
                sets = max(1, min(pool, math.ceil(threshold / (tensors * tensor_bytes))))
                rows.append({'family': 'batchnorm', 'op': op, 'variant': variant,
                             'layout': layout, 'dims': list(dims), 'tag': tag, 'sets': sets})
    # layer and RMS norm, then group and instance norm on the group-norm tensor
    fn_shapes = [('rows', list(rc), None, 'transformer' if gpu else 'transformer-cpu')
                 for i, rc in enumerate(ROWS_GPU if gpu else ROWS_CPU) if not (quick and i > 0)]
    n, c, h, w = GROUPS_NCHW
    dims = [batch_for(gpu, n, c * h * w * 4), c, h, w]
    tag = 'groupnorm' if gpu else 'groupnorm-scaled'
    fn_shapes += [('groupnorm', dims, GROUPS, tag), ('instancenorm', dims, c, tag)]
    for kind, dims, groups, tag in fn_shapes:
        tensor_bytes = math.prod(dims) * 4
        pool = min(32, math.ceil(threshold / (2 * tensor_bytes)))
        for layout in (('-',) if kind == 'rows' else ('NCHW', 'NHWC')):
            for (family, op, variant), (_, _, tensors) in FN_OPS.items():
                if (kind == 'rows') != (family in ('layernorm', 'rmsnorm')) or (
                        kind != 'rows' and family != kind):
                    continue
                sets = max(1, min(pool, math.ceil(threshold / (tensors * tensor_bytes))))
                row = {'family': family, 'op': op, 'variant': variant, 'layout': layout,
                       'dims': list(dims), 'tag': tag, 'sets': sets}
                if groups:
                    row['groups'] = groups
                rows.append(row)
    return rows


def shape_name(row):
    """clnorm-bench's shape names: N8 C64 H112 W112, N8 C256 H56 W56 G32, rows1024 cols4096."""
    dims = row['dims']
    if len(dims) == 2:
        return 'rows%d cols%d' % tuple(dims)
    name = 'N%d C%d H%d W%d' % tuple(dims)
    if row['family'] == 'groupnorm':
        name += ' G%d' % row['groups']
    return name


def rms_peer():
    """(function, description) of the RMS norm peer: F.rms_norm where this PyTorch has it, else
    composed of elementwise ops as a PyTorch user writes it."""
    if hasattr(F, 'rms_norm'):
        return (lambda x, w: F.rms_norm(x, (x.shape[-1],), w, RMS_EPS),
                'F.rms_norm(x, (cols,), w, %g)' % RMS_EPS)
    return (lambda x, w: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * w,
            'composed (torch %s has no F.rms_norm): x * torch.rsqrt(x.pow(2).mean(-1, '
            'keepdim=True) + %g) * w' % (torch.__version__, RMS_EPS))


PEERS = {
    'batchnorm': 'F.batch_norm (+ out += residual, torch.relu_)',
    'layernorm': 'F.layer_norm (residual: h = x + r, then F.layer_norm(h))',
    'rmsnorm': rms_peer()[1] + ' (residual: h = x + r first)',
    'groupnorm': 'F.group_norm',
    'instancenorm': 'F.instance_norm(use_input_stats=True)',
}


class Timer:
    def __init__(self, device):
        self.cuda = device.startswith('cuda')

    def __call__(self, fn):
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b)


def tensor(dims, layout, device, gen, lo, hi):
    t = torch.rand(dims, generator=gen, dtype=torch.float32).mul_(hi - lo).add_(lo).to(device)
    if layout == 'NHWC':
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def make_fn_calls(row, device, gen):
    """Layer, RMS, group and instance norm: one zero-argument callable per rotation set."""
    family, op, variant, layout = row['family'], row['op'], row['variant'], row['layout']
    dims = tuple(row['dims'])
    c = dims[-1] if family in ('layernorm', 'rmsnorm') else dims[1]
    weight = torch.rand(c, generator=gen).add_(0.5).to(device)
    bias = None if family == 'rmsnorm' else torch.rand(c, generator=gen).sub_(0.5).to(device)
    rms = rms_peer()[0]

    def forward(x, w, b):
        if family == 'layernorm':
            return F.layer_norm(x, (c,), w, b, LN_EPS)
        if family == 'rmsnorm':
            return rms(x, w)
        if family == 'groupnorm':
            return F.group_norm(x, row['groups'], w, b, LN_EPS)
        return F.instance_norm(x, weight=w, bias=b, use_input_stats=True, eps=LN_EPS)

    calls = []
    for _ in range(row['sets']):
        x = tensor(dims, layout, device, gen, -1.0, 2.0)
        if op == 'forward':
            if variant == 'residual':
                residual = tensor(dims, layout, device, gen, -1.0, 1.0)

                def call(x=x, residual=residual):
                    h = x + residual
                    return forward(h, weight, bias), h
            else:
                def call(x=x):
                    return forward(x, weight, bias)
        else:
            xr = x.detach().requires_grad_(True)
            inputs = [xr, weight.detach().clone().requires_grad_(True)]
            if bias is not None:
                inputs.append(bias.detach().clone().requires_grad_(True))
            out = forward(inputs[0], inputs[1], inputs[2] if bias is not None else None)
            dy = tensor(dims, layout, device, gen, -1.0, 1.0)

            def call(out=out, inputs=tuple(inputs), dy=dy):
                return torch.autograd.grad(out, inputs, dy, retain_graph=True)
        calls.append(call)
    return calls


def make_calls(row, device, gen):
    """One zero-argument callable per rotation set."""
    if row['family'] != 'batchnorm':
        return make_fn_calls(row, device, gen)
    op, variant, layout, dims = row['op'], row['variant'], row['layout'], tuple(row['dims'])
    c = dims[1]
    weight = torch.rand(c, generator=gen).add_(0.5).to(device)
    bias = torch.rand(c, generator=gen).sub_(0.5).to(device)
    running_mean = torch.rand(c, generator=gen).to(device)
    running_var = torch.rand(c, generator=gen).add_(0.5).to(device)
    relu = variant in ('relu', 'add_relu')
    add = variant == 'add_relu'
    calls = []
    for _ in range(row['sets']):
        x = tensor(dims, layout, device, gen, -1.0, 2.0)
        residual = tensor(dims, layout, device, gen, -1.0, 1.0) if add else None
        if op in ('forward_training', 'forward_inference'):
            training = op == 'forward_training'

            def call(x=x, residual=residual, training=training):
                out = F.batch_norm(x, running_mean, running_var, weight, bias,
                                   training=training, momentum=0.1, eps=1e-5)
                if add:
                    out += residual
                if relu:
                    torch.relu_(out)
                return out
        else:
            xr = x.detach().requires_grad_(True)
            wr = weight.detach().clone().requires_grad_(True)
            br = bias.detach().clone().requires_grad_(True)
            inputs = [xr, wr, br]
            out = F.batch_norm(xr, running_mean.clone(), running_var.clone(), wr, br,
                               training=True, momentum=0.1, eps=1e-5)
            if add:
                rr = residual.detach().requires_grad_(True)
                inputs.append(rr)
                out += rr
            if relu:
                torch.relu_(out)
            dy = tensor(dims, layout, device, gen, -1.0, 1.0)

            def call(out=out, inputs=tuple(inputs), dy=dy):
                return torch.autograd.grad(out, inputs, dy, retain_graph=True)
        calls.append(call)
    return calls


CLK_TCK = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100


def cpu_sample():
    """(busy, total) jiffies of all CPUs from /proc/stat and this process's own CPU jiffies."""
    try:
        with open('/proc/stat') as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    t = os.times()
    return sum(v) - v[3] - v[4], sum(v), (t.user + t.system) * CLK_TCK


def foreign_share(a, b):
    """Share of all CPUs' time between samples a and b used by other processes (-1: unknown)."""
    if not a or not b or b[1] <= a[1]:
        return -1.0
    return max(0.0, (b[0] - a[0]) - (b[2] - a[2])) / (b[1] - a[1])


def wait_quiet(share, max_s=120):
    for _ in range(max_s):
        a = cpu_sample()
        time.sleep(1)
        if foreign_share(a, cpu_sample()) < share:
            return


def copy_gbps(device, timer, runs, warmup, nbytes):
    x = torch.ones(nbytes // 4, device=device)
    y = torch.empty_like(x)
    times = []
    for i in range(warmup + runs):
        t = timer(lambda: y.copy_(x))
        if i >= warmup:
            times.append(t)
    return 2 * nbytes / (statistics.median(times) * 1e6)


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'CPU'


MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': str(32 * MIB), 'MALLOC_TRIM_THRESHOLD_': str(16 << 30)}


def main():
    if ('--no-malloc-tuning' not in sys.argv and sys.platform.startswith('linux')
            and not all(k in os.environ for k in MALLOC_ENV)):
        env = dict(os.environ)
        env.update(MALLOC_ENV)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--from', dest='source', help='clnorm-bench JSON whose rows to run')
    ap.add_argument('--json', help='output JSON path')
    ap.add_argument('--device', default='cpu', help='cpu (default) or cuda')
    ap.add_argument('--threads', type=int,
                    help='torch.set_num_threads (default: with --from a CPU device, its compute '
                    'units; else nproc)')
    ap.add_argument('--shape-set', choices=('cpu', 'gpu'), help='without --from')
    ap.add_argument('--quick', action='store_true', help='without --from: a fast subset')
    ap.add_argument('--ops', default='', help='comma-separated substrings of "family op variant layout"')
    ap.add_argument('--runs', type=int, default=25)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--max-foreign', type=float, default=0.05,
                    help='retry a row when other processes used more than this share of the CPUs')
    ap.add_argument('--retries', type=int, default=5)
    ap.add_argument('--max-wait', type=int, default=120,
                    help='before a retry, wait at most this many seconds for the other processes '
                    'to calm down')
    ap.add_argument('--no-malloc-tuning', action='store_true',
                    help='leave glibc malloc\'s thresholds alone (see the description)')
    args = ap.parse_args()

    source = None
    if args.source:
        with open(args.source) as f:
            source = json.load(f)
    if args.threads is None:
        # the same thread count as the OpenCL CPU device's compute units (PoCL: one per core)
        dev = (source or {}).get('device', {})
        args.threads = (dev.get('compute_units') if dev.get('type') == 'CPU' else None) or \
            os.cpu_count()
    torch.set_num_threads(args.threads)
    if args.device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True
    timer = Timer(args.device)
    threshold = 256 * MIB
    if args.source:
        threshold = source.get('method', {}).get('rotate_threshold_bytes', threshold)
        rows = [dict(r) for r in source['rows'] if op_counts(r['family'], r['op'], r['variant'])]
    else:
        gpu = args.shape_set == 'gpu' if args.shape_set else args.device.startswith('cuda')
        rows = build_rows(gpu, args.quick, threshold)
    filters = [s for s in args.ops.split(',') if s]
    rows = [r for r in rows if not filters or any(
        s in '%s %s %s %s' % (r['family'], r['op'], r['variant'], r['layout']) for s in filters)]

    load_start = list(os.getloadavg())
    wait_quiet(args.max_foreign, min(60, args.max_wait))
    copy_bytes = (source or {}).get('copy', {}).get('buffer_bytes', 128 * MIB)
    own_copy = copy_gbps(args.device, timer, args.runs, args.warmup, copy_bytes)
    # fractions against the device's copy bandwidth as clnorm-bench measured it (same hardware),
    # else against PyTorch's own copy
    ref_copy = (source or {}).get('copy', {}).get('GBps') or own_copy
    if args.device.startswith('cuda'):
        dev_name = torch.cuda.get_device_name()
        driver = 'PyTorch %s, CUDA %s, cuDNN %s' % (torch.__version__, torch.version.cuda,
                                                    torch.backends.cudnn.version())
    else:
        dev_name = cpu_name()
        driver = 'PyTorch %s (CPU, %d threads)' % (torch.__version__, torch.get_num_threads())
    print('pytorch %s on %s, %d threads; copy %.1f GB/s (reference %.1f GB/s)' % (
        torch.__version__, dev_name, torch.get_num_threads(), own_copy, ref_copy), flush=True)
    families = []
    for r in rows:
        if r['family'] not in families:
            families.append(r['family'])
    for fam in families:
        print('  %-12s peer: %s' % (fam, PEERS[fam]))
    print('%-44s %-22s %9s %8s %6s %4s' % ('op', 'shape', 'ms', 'GB/s', '%copy', 'sets'))

    gen = torch.Generator().manual_seed(1)
    out_rows = []
    for r in rows:
        dims = r['dims']
        tensor_bytes = math.prod(dims) * 4
        reads, writes, _ = op_counts(r['family'], r['op'], r['variant'])
        res = {k: r[k] for k in ('family', 'op', 'variant', 'layout', 'dims', 'groups', 'tag',
                                 'sets') if k in r}
        res.update(shape=r.get('shape') or shape_name(r), tensor_bytes=tensor_bytes,
                   runs=args.runs, reads=reads, writes=writes, passes=None,
                   peer=PEERS[r['family']])
        label = '%s %s %s %s' % (r['family'], r['op'], r['variant'], r['layout'])
        try:
            calls = make_calls(r, args.device, gen)
            # outputs rotate like clnorm-bench's: each call's outputs stay alive for the next
            # sets - 1 calls, so the allocator cannot hand the next call the buffer just written
            # (still in the cache), which clnorm-bench's rotating output buffers never get either
            held = collections.deque(maxlen=max(len(calls) - 1, 0))
            for attempt in range(args.retries + 1):
                times = []
                c0 = cpu_sample()
                warmup = max(args.warmup, len(calls) + 1)
                for i in range(warmup + args.runs):
                    call = calls[i % len(calls)]
                    t = timer(lambda: held.append(call()) if held.maxlen else call())
                    if i >= warmup:
                        times.append(t)
                foreign = foreign_share(c0, cpu_sample())
                if foreign < args.max_foreign or attempt == args.retries:
                    break
                print('  other processes used %.0f%% of the CPUs; retrying' % (100 * foreign),
                      file=sys.stderr, flush=True)
                wait_quiet(args.max_foreign, args.max_wait)
            res.update(attempts=attempt + 1, foreign_cpu_share=foreign)
            del calls, held
            times.sort()
            ms = statistics.median(times)
            compulsory = (reads + writes) * tensor_bytes
            gbps = compulsory / (ms * 1e6)
            n = len(times)
            res.update(ms=ms, ms_min=times[0], ms_max=times[-1], ms_p10=times[(n - 1) // 10],
                       ms_p90=times[(n - 1) - (n - 1) // 10], compulsory_bytes=compulsory,
                       GBps=gbps, frac_copy=gbps / ref_copy)
            print('%-44s %-22s %9.3f %8.1f %5.0f%% %4d%s' % (
                label, res['shape'], ms, gbps, 100 * gbps / ref_copy, r['sets'],
                '  (other processes were busy)' if foreign >= args.max_foreign else ''), flush=True)
        except RuntimeError as e:  # e.g. out of memory
            res['error'] = str(e)[:200]
            print('%-44s %-22s ERROR %s' % (label, res['shape'], res['error']), flush=True)
        out_rows.append(res)

    doc = {
        'schema': 'clnorm-bench/1',
        'tool': 'pytorch',
        'version': torch.__version__,
        'commit': None,
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'device': {'name': dev_name, 'driver': driver, 'type': 'GPU' if args.device.startswith('cuda') else 'CPU'},
        'host_cpus': os.cpu_count(),
        'threads': torch.get_num_threads(),
        'interop_threads': torch.get_num_interop_threads(),
        'loadavg_start': load_start,
        'loadavg_end': list(os.getloadavg()),
        'method': {'runs': args.runs, 'warmup': 'max(%d, sets + 1)' % args.warmup, 'statistic': 'median',
                   'timer': 'CUDA events' if args.device.startswith('cuda') else 'time.perf_counter around the call',
                   'rotate_threshold_bytes': threshold, 'max_foreign_cpu_share': args.max_foreign,
                   'retries': args.retries, 'outputs_rotate': True,
                   'malloc_env': {k: os.environ.get(k) for k in MALLOC_ENV}},
        'copy': {'GBps': own_copy, 'reference_GBps': ref_copy, 'buffer_bytes': copy_bytes},
        'peers': {f: PEERS[f] for f in families},
        'rows': out_rows,
    }
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(doc, f, indent=1)
        print('wrote %s' % args.json)
    return 1 if any('error' in r for r in out_rows) else 0


if __name__ == '__main__':
    sys.exit(main())
