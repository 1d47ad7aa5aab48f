#!/usr/bin/env python3
"""Runs clnorm-bench --ab once per device-parameter override and prints each row's time relative to
the built-in parameters (below 1.0: the override is faster). For tuning the built-in table.

Each override is compared inside one process, run by run (clnorm-bench --ab alternates the
built-in parameters and the override on the same context), so slow drifts of the machine (other
processes, other virtual machines on the host) cancel out of the ratio; comparing separate
processes on the 2-core CI machine swung by +-30% for identical parameters.

    python3 bench/sweep_params.py [--bench PATH] [--json OUT.json] [--shapes F] [--ops F]
                                  [--set "name=v,..."]... [-- more clnorm-bench options]
(set CLNORM_PARAMS to change the parameters the overrides are compared with)

Without --set, a default sweep over each parameter (one at a time) is run. A set "kernels=DIR"
compares kernel sources instead: DIR's (an earlier commit's kernels/, through CLNORM_KERNEL_DIR)
against the library's own, in separate processes (see kernel_ab).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

DEFAULT_SETS = [
    'vector_width=4', 'vector_width=2', 'vector_width=1',
    'work_group_size=4', 'work_group_size=16', 'work_group_size=64',
    'items_per_thread=4',
    'partials_per_channel=1', 'partials_per_channel=2', 'partials_per_channel=8',
    'partials_per_channel=32',
    'channel_tile=1', 'channel_tile=4', 'channel_tile=16', 'channel_tile=32',
    'block_vectors=1', 'block_vectors=2', 'block_vectors=8',
    'item_tile=1', 'item_tile=4', 'item_tile=16',
    'elementwise_streams=1', 'elementwise_streams=2',
    'flat_planes=1', 'row_block=4', 'row_block=8', 'rows_cached_kib=65536',
]


def key(row):
    """A row's identity: the family too (layer and RMS norm rows share op, layout and shape)."""
    return (row.get('family'), row['op'], row['variant'], row['layout'], row['shape'])


def label(row):
    return ' '.join((row.get('family') or '', row['op'], row['variant'], row['layout'],
                     row['shape'])).strip()


def kernel_ab(base, kernel_dir, tmp, i, rounds=2):
    """"kernels=DIR": the built-in parameters with the kernel sources of DIR (CLNORM_KERNEL_DIR,
    e.g. an earlier commit's kernels/) against the library's own, in separate processes taken
    in turn (a kernel source cannot change within one), each row's best median of `rounds`;
    ab_ratio = DIR's time / the built-in kernels' time."""
    best = {}
    for r in range(rounds):
        for which, env in (('dir', dict(os.environ, CLNORM_KERNEL_DIR=kernel_dir)),
                           ('own', {k: v for k, v in os.environ.items()
                                    if k != 'CLNORM_KERNEL_DIR'})):
            path = os.path.join(tmp, '%d-%s-%d.json' % (i, which, r))
            print('== kernels=%s: %s kernels, round %d' % (kernel_dir, which, r + 1), flush=True)
            proc = subprocess.run(base + ['--json', path], stdout=subprocess.PIPE, text=True,
                                  env=env)
            if not os.path.exists(path):
                print(proc.stdout)
                print('clnorm-bench failed (status %d)' % proc.returncode)
                return None
            with open(path) as f:
                run = json.load(f)
            for row in run['rows']:
                if 'ms' in row:
                    k = (which, key(row))
                    best[k] = min(best.get(k, row['ms']), row['ms'])
            if which == 'own':
                own = run
    for row in own['rows']:
        if 'ms' in row and ('dir', key(row)) in best:
            row['ms'] = best[('own', key(row))]
            row['ab_ratio'] = best[('dir', key(row))] / row['ms']
    return own


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bench', default='build-bench/bench/clnorm-bench')
    ap.add_argument('--json', help='write every configuration\'s results here')
    ap.add_argument('--shapes', default='C64 H112,C1024 H14,C2048 H7')
    ap.add_argument('--ops', default='forward_training plain,forward_inference plain,'
                                     'backward plain,partial_stats,apply')
    ap.add_argument('--runs', default='20')
    ap.add_argument('--set', action='append', dest='sets',
                    help='an override to try, "name=value[,name=value]" (repeatable)')
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != '--']
    sets = [p for p in (args.sets if args.sets else DEFAULT_SETS) if p]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, params in enumerate(sets):
            path = os.path.join(tmp, '%d.json' % i)
            base = [args.bench, '--no-latency', '--runs', args.runs, '--shapes', args.shapes,
                    '--ops', args.ops] + extra
            if params.startswith('kernels='):
                results[params] = kernel_ab(base, params.split('=', 1)[1], tmp, i)
                if not results[params]:
                    del results[params]
                    continue
            else:
                print('== --ab %s' % params, flush=True)
                proc = subprocess.run(base + ['--ab', params, '--json', path],
                                      stdout=subprocess.PIPE, text=True)
                if not os.path.exists(path):
                    print(proc.stdout)
                    print('clnorm-bench failed (status %d)' % proc.returncode)
                    continue
                with open(path) as f:
                    results[params] = json.load(f)
            # each set's ratios as soon as it is done: a sweep cut short by a deadline (a GPU
            # call) still shows the sets it finished
            for r in results[params]['rows']:
                if 'ab_ratio' in r:
                    print('  %-60s %.2f' % (label(r), r['ab_ratio']), flush=True)
    if not results:
        sys.exit('every run failed')
    first = next(iter(results.values()))
    print('\nbuilt-in params: %s; copy %.1f GB/s' % (first['params'], first['copy']['GBps']))
    keys = [key(r) for r in first['rows']]
    cols = list(results)
    print('\noverride time / built-in time, measured alternately in one process (kernels=DIR: in '
          'separate processes, in turn; < 1: faster)')
    width = max(len(label(r)) for r in first['rows'])
    print('%-*s %8s' % (width, 'row', 'base ms') +
          ''.join(' %8s' % c.split('=')[0][:8] for c in cols))
    print(' ' * (width + 9) + ''.join(' %8s' % c.split('=')[-1] for c in cols))
    for k in keys:
        b = next(r for r in first['rows'] if key(r) == k)
        if 'ms' not in b:
            continue
        line = '%-*s %8.3f' % (width, label(b), b['ms'])
        for c in cols:
            r = next((r for r in results[c]['rows'] if key(r) == k), None)
            line += ' %8s' % ('%.2f' % r['ab_ratio'] if r and 'ab_ratio' in r else 'err')
        print(line)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'schema': 'clnorm-bench-sweep/1', 'runs': results}, f, indent=1)
        print('wrote %s' % args.json)


if __name__ == '__main__':
    main()
