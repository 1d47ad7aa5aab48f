#!/usr/bin/env python3
"""Runs clnorm-bench once per CLNORM_PARAMS override and prints each row's time relative to the
built-in parameters (below 1.0: the override is faster). For tuning the built-in table.

    python3 bench/sweep_params.py [--bench PATH] [--json OUT.json] [--shapes F] [--ops F]
                                  [--set "name=v,..."]... [-- more clnorm-bench options]

Without --set, a default sweep over each parameter (one at a time) is run.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

DEFAULT_SETS = [
    '',
    'vector_width=4', 'vector_width=2', 'vector_width=1',
    'work_group_size=4', 'work_group_size=16', 'work_group_size=64',
    'items_per_thread=4',
    'partials_per_channel=1', 'partials_per_channel=2', 'partials_per_channel=8',
    'partials_per_channel=32',
    'channel_tile=1', 'channel_tile=4', 'channel_tile=16', 'channel_tile=32',
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bench', default='build-bench/bench/clnorm-bench')
    ap.add_argument('--json', help='write every configuration\'s results here')
    ap.add_argument('--shapes', default='C64 H112,C1024 H14,C2048 H7')
    ap.add_argument('--ops', default='forward_training plain,forward_inference plain,'
                                     'backward plain,partial_stats,apply')
    ap.add_argument('--runs', default='20')
    ap.add_argument('--set', action='append', dest='sets',
                    help='a CLNORM_PARAMS value to try (repeatable; "" is the built-in table)')
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != '--']
    sets = args.sets if args.sets else DEFAULT_SETS
    if '' not in sets:
        sets = [''] + sets
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, params in enumerate(sets):
            path = os.path.join(tmp, '%d.json' % i)
            env = dict(os.environ, CLNORM_PARAMS=params)
            cmd = [args.bench, '--no-latency', '--runs', args.runs, '--shapes', args.shapes,
                   '--ops', args.ops, '--json', path] + extra
            print('== CLNORM_PARAMS="%s"' % params, flush=True)
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
            if not os.path.exists(path):
                print(proc.stdout)
                print('clnorm-bench failed (status %d)' % proc.returncode)
                continue
            with open(path) as f:
                results[params] = json.load(f)
    if '' not in results:
        sys.exit('the baseline run failed')
    base = results['']
    print('\nbaseline params: %s; copy %.1f GB/s' % (base['params'], base['copy']['GBps']))
    keys = [(r['op'], r['variant'], r['layout'], r['shape']) for r in base['rows']]
    cols = [p for p in sets if p in results and p != '']
    print('\ntime relative to the built-in parameters (ms of the baseline in the first column)')
    head = '%-38s %8s' % ('row', 'base ms') + ''.join(' %9s' % c.replace('_', '')[:9] for c in cols)
    print(head)
    print(' ' * 47 + ''.join(' %9s' % c.split('=')[-1] for c in cols))
    for k in keys:
        b = next(r for r in base['rows'] if (r['op'], r['variant'], r['layout'], r['shape']) == k)
        if 'ms' not in b:
            continue
        line = '%-38s %8.3f' % (' '.join((k[0], k[2], k[3])), b['ms'])
        for c in cols:
            r = next((r for r in results[c]['rows']
                      if (r['op'], r['variant'], r['layout'], r['shape']) == k), None)
            line += ' %9s' % ('%.2f' % (r['ms'] / b['ms']) if r and 'ms' in r else 'err')
        print(line)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'schema': 'clnorm-bench-sweep/1', 'runs': results}, f, indent=1)
        print('wrote %s' % args.json)


if __name__ == '__main__':
    main()
