#!/usr/bin/env python3
"""Compares clnorm-bench results with the PyTorch peer: ratio table, target checks, PNG chart.

    python3 bench/plot.py RESULTS.json [MORE.json ...] [--combine OUT.json] [--png OUT.png]
                          [--markdown]

Inputs are any mix of: a clnorm-bench JSON (tool "clnorm"), a torch_peer.py JSON (tool
"pytorch"), a combined run file written by --combine ({"runs": [...]}) and the GPU machine's
../shared/gpu/torch_reference.py output (its plain batch-norm rows, layer norm forward and
backward, RMS norm forward and group norm forward). Rows match on (family, op, variant, layout,
shape), for every family (batch, layer, RMS, group, instance norm). The ratio is clnorm time /
PyTorch time: below 1.0 clnorm is faster. --combine writes all inputs into one file (what
bench/run.sh commits).
"""
import argparse
import json
import math
import os
import re
import sys


def load_docs(path):
    with open(path) as f:
        doc = json.load(f)
    if 'runs' in doc:
        return doc['runs']
    if 'rows' in doc:
        return [doc]
    # torch_reference.py (GPU machine): {"batchnorm N64 C64 H112 W112 NCHW": {...ms}, ...}
    rows = []
    names = {'forward_training_ms': 'forward_training', 'forward_inference_ms': 'forward_inference',
             'backward_ms': 'backward'}
    for key, val in doc.items():
        m = re.match(r'batchnorm (N\d+ C\d+ H\d+ W\d+) (NCHW|NHWC)$', key)
        if not m or not isinstance(val, dict):
            continue
        dims = [int(v) for v in re.findall(r'\d+', m.group(1))]
        for field, op in names.items():
            if field in val:
                reads, writes = (2, 1) if op == 'backward' else (1, 1)
                b = (reads + writes) * math.prod(dims) * 4
                rows.append({'family': 'batchnorm', 'op': op, 'variant': 'plain',
                             'layout': m.group(2), 'shape': m.group(1), 'dims': dims,
                             'ms': val[field], 'compulsory_bytes': b,
                             'GBps': b / (val[field] * 1e6)})
    # "layernorm rows16384 cols4096": {forward_ms, backward_ms, rmsnorm_forward_ms};
    # "groupnorm N32 C256 H56 W56 G32": {forward_ms} (channels-first)
    fn_fields = {'forward_ms': ('forward', None), 'backward_ms': ('backward', None),
                 'rmsnorm_forward_ms': ('forward', 'rmsnorm')}
    for key_, val in doc.items():
        m = re.match(r'(layernorm|groupnorm) ((rows\d+ cols\d+)|(N\d+ C\d+ H\d+ W\d+) G(\d+))$',
                     key_)
        if not m or not isinstance(val, dict):
            continue
        rows_shape = m.group(3) is not None
        dims = [int(v) for v in re.findall(r'\d+', m.group(3) or m.group(4))]
        for field, (op, family) in fn_fields.items():
            if field not in val:
                continue
            reads, writes = (2, 1) if op == 'backward' else (1, 1)
            b = (reads + writes) * math.prod(dims) * 4
            row = {'family': family or m.group(1), 'op': op, 'variant': 'plain',
                   'layout': '-' if rows_shape else 'NCHW', 'shape': m.group(2), 'dims': dims,
                   'ms': val[field], 'compulsory_bytes': b, 'GBps': b / (val[field] * 1e6)}
            if not rows_shape:
                row['groups'] = int(m.group(5))
            rows.append(row)
    return [{'schema': 'clnorm-bench/1', 'tool': 'pytorch',
             'device': {'name': doc.get('device', '?'), 'type': 'GPU',
                        'driver': 'PyTorch %s, cuDNN %s' % (doc.get('torch'), doc.get('cudnn'))},
             'copy': {'GBps': doc.get('copy_GBps')}, 'rows': rows}]


def key(r):
    return (r['family'], r['op'], r['variant'], r['layout'], r['shape'])


def merge_tool(docs, tool):
    """One document of the tool's rows from all its documents (bench/run.sh's paired parts: one
    per shape and round), each row keeping the copy bandwidth its own part measured; where a row
    ran in several rounds, the round with the lowest median time (its times in 'round_ms'). The
    first document gives the metadata, the first with a latency its latency. None when the tool
    has none."""
    mine = [d for d in docs if d.get('tool') == tool]
    if not mine:
        return None
    out = dict(mine[0])
    best = {}
    for d in mine:
        for r in d['rows']:
            r = dict(r, copy_GBps=r.get('copy_GBps', d.get('copy', {}).get('GBps')))
            old = best.get(key(r))
            if old is None:
                best[key(r)] = dict(r, round_ms=[r['ms']] if 'ms' in r else [])
                continue
            times = old['round_ms'] + ([r['ms']] if 'ms' in r else [])
            if 'ms' in r and ('ms' not in old or r['ms'] < old['ms']):
                old = r
            best[key(r)] = dict(old, round_ms=times)
        if 'latency' not in out and d.get('latency'):
            out['latency'] = d['latency']
    out['rows'] = list(best.values())
    copies = [d['copy']['GBps'] for d in mine if d.get('copy', {}).get('GBps')]
    if copies:
        out['copy'] = dict(mine[0].get('copy', {}), GBps=sorted(copies)[len(copies) // 2],
                           GBps_range=[min(copies), max(copies)], parts=len(mine))
    return out


def row_copy(doc, r):
    """The copy bandwidth measured with this row (its part's, else the document's)."""
    return r.get('copy_GBps') or doc['copy']['GBps']


def contended(doc, r):
    """True when other processes were busy on the CPUs during this row despite retries."""
    limit = doc.get('method', {}).get('max_foreign_cpu_share', 0.05)
    share = r.get('foreign_cpu_share')
    return share is not None and share >= limit


def fmt_ratio(x):
    return '%.2f' % x if x is not None else '-'


def ratio_table(clnorm, peer):
    """Rows of (clnorm row, peer row or None, ratio or None) in clnorm's order."""
    peer_rows = {key(r): r for r in peer['rows']} if peer else {}
    out = []
    for r in clnorm['rows']:
        p = peer_rows.get(key(r))
        ratio = None
        if p and 'ms' in r and 'ms' in p:
            ratio = r['ms'] / p['ms']
        out.append((r, p, ratio))
    return out


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def print_latency(clnorm):
    lat = clnorm.get('latency')
    if not lat:
        return
    if lat.get('error'):
        print('first-call latency: failed: %s' % lat['error'])
    elif lat.get('warm_ms') is not None:
        print('first-call latency (context creation -> first batch-norm result read back): '
              'cold %.1f ms (empty cache folder, %s builds), warm %.1f ms (cache filled)' % (
                  lat['cold_ms'], lat.get('cold_builds'), lat['warm_ms']))


def print_tables(clnorm, peer, markdown):
    table = ratio_table(clnorm, peer)
    copy = clnorm['copy']
    copy_s = '%.1f GB/s' % copy['GBps']
    if copy.get('parts', 1) > 1:
        copy_s = '%.1f-%.1f GB/s (measured with each of %d parts; %%copy uses the row\'s own)' % (
            copy['GBps_range'][0], copy['GBps_range'][1], copy['parts'])
    print('clnorm on %s (%s, driver %s), copy %s; peer: %s' % (
        clnorm['device']['name'], clnorm['device'].get('platform', ''),
        clnorm['device'].get('driver', ''), copy_s,
        peer['device'].get('driver', peer['device']['name']) if peer else 'none'))
    families = []
    for r in clnorm['rows']:
        if r['family'] not in families:
            families.append(r['family'])
    for fam in families:
        if peer and peer.get('peers', {}).get(fam):
            print('  %-12s PyTorch peer: %s' % (fam, peer['peers'][fam]))
    print_latency(clnorm)
    if markdown:
        print('\n| family | op | variant | layout | shape | clnorm ms | PyTorch ms | '
              'clnorm/PyTorch | clnorm % copy | PyTorch % copy | passes |')
        print('| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    else:
        print('\n%-12s %-18s %-8s %-4s %-22s %9s %9s %7s %7s %7s %6s' % (
            'family', 'op', 'variant', 'lay', 'shape', 'clnorm', 'pytorch', 'ratio', '%copy',
            'pt%copy', 'passes'))
    for r, p, ratio in table:
        if 'error' in r:
            print('%s %s %s %s %s: clnorm error %s' % (r['family'], r['op'], r['variant'],
                                                        r['layout'], r['shape'], r['error']))
            continue
        pms = '%.3f' % p['ms'] if p and 'ms' in p else '-'
        pfrac = '%.0f%%' % (100 * p['GBps'] / row_copy(clnorm, r)) if p and 'GBps' in p else '-'
        passes = '%s/%s' % (r.get('passes'), r['reads'] + r['writes']) if r.get('passes') else '-'
        ratio_s = fmt_ratio(ratio)
        if ratio is not None and ratio > 1.0:
            ratio_s += ' !' if not markdown else ' (slower)'
        if contended(clnorm, r) or (p and contended(peer, p)):
            ratio_s += ' (busy CPUs)'
        if markdown:
            print('| %s | %s | %s | %s | %s | %.3f | %s | %s | %.0f%% | %s | %s |' % (
                r['family'], r['op'], r['variant'], r['layout'], r['shape'], r['ms'], pms,
                ratio_s, 100 * r['frac_copy'], pfrac, passes))
        else:
            print('%-12s %-18s %-8s %-4s %-22s %9.3f %9s %8s %6.0f%% %7s %6s' % (
                r['family'], r['op'], r['variant'], r['layout'], r['shape'], r['ms'], pms,
                ratio_s, 100 * r['frac_copy'], pfrac, passes))
    return table


def print_summary(clnorm, table):
    print('\ngeometric-mean ratio clnorm/PyTorch per op and layout (< 1: clnorm faster):')
    groups = {}
    for r, _, ratio in table:
        if ratio is not None:
            groups.setdefault((r['family'], r['op'], r['variant'], r['layout']), []).append(ratio)
    for (family, op, variant, layout), ratios in groups.items():
        print('  %-12s %-18s %-8s %-4s  geomean %.2f  worst %.2f  best %.2f  '
              '(%d/%d shapes <= 1.0)' % (
                  family, op, variant, layout, geomean(ratios), max(ratios), min(ratios),
                  sum(1 for x in ratios if x <= 1.0), len(ratios)))


def print_pivot(clnorm, table):
    """Markdown: one line per shape, one column per op and layout, cells clnorm/PyTorch time for
    the plain op and, after a slash, the geometric mean over its fused variants."""
    fn_table = [t for t in table if t[0]['family'] != 'batchnorm']
    table = [t for t in table if t[0]['family'] == 'batchnorm']
    ops = [o for o in ('forward_training', 'forward_inference', 'backward')
           if any(r['op'] == o for r, _, _ in table)]
    cols = [(o, l) for o in ops for l in ('NCHW', 'NHWC')]
    shapes = []
    for r, _, _ in table:
        if r['op'] in ops and r['shape'] not in shapes:
            shapes.append(r['shape'])
    short = {'forward_training': 'train fwd', 'forward_inference': 'infer fwd',
             'backward': 'backward'}
    if ops:
        print('\n| shape | ' + ' | '.join('%s %s' % (short[o], l) for o, l in cols) + ' |')
        print('| --- |' + ' ---: |' * len(cols))
    for s in shapes:
        cells = []
        for o, l in cols:
            plain = [x for r, _, x in table if r['shape'] == s and r['op'] == o and
                     r['layout'] == l and r['variant'] == 'plain' and x is not None]
            fused = [x for r, _, x in table if r['shape'] == s and r['op'] == o and
                     r['layout'] == l and r['variant'] != 'plain' and x is not None]
            cell = '%.2f' % plain[0] if plain else '-'
            if fused:
                cell += ' / %.2f' % geomean(fused)
            cells.append('**%s**' % cell if plain and plain[0] > 1.0 else cell)
        print('| %s | %s |' % (s, ' | '.join(cells)))
    if not fn_table:
        return
    # the other families: one line per (family, shape, layout), clnorm/PyTorch time per op
    fn_cols = [('forward', 'plain'), ('forward', 'residual'), ('backward', 'plain')]
    fn_cols = [c for c in fn_cols if any((r['op'], r['variant']) == c for r, _, _ in fn_table)]
    names = {('forward', 'plain'): 'forward', ('forward', 'residual'): 'forward + residual',
             ('backward', 'plain'): 'backward'}
    print('\n| norm | shape | layout | ' + ' | '.join(names[c] for c in fn_cols) + ' |')
    print('| --- | --- | --- |' + ' ---: |' * len(fn_cols))
    lines = []
    for r, _, _ in fn_table:
        if (r['family'], r['shape'], r['layout']) not in lines:
            lines.append((r['family'], r['shape'], r['layout']))
    for family, shape, layout in lines:
        cells = []
        for op, variant in fn_cols:
            x = next((x for r, _, x in fn_table if (r['family'], r['shape'], r['layout'],
                                                     r['op'], r['variant']) ==
                      (family, shape, layout, op, variant)), None)
            cells.append('-' if x is None else '**%.2f**' % x if x > 1.0 else '%.2f' % x)
        print('| %s | %s | %s | %s |' % (family, shape, layout, ' | '.join(cells)))


def check_targets(clnorm, peer, table):
    """The targets of issue 5 that this run can decide; returns a list of (target, met, detail)."""
    out = []
    gpu = clnorm['device'].get('type') == 'GPU'
    compared = [(r, p, ratio) for r, p, ratio in table if ratio is not None]
    if compared:
        scope = [(r, p, x) for r, p, x in compared if not gpu or (
            r['family'] == 'batchnorm' and r['op'] in ('forward_training', 'backward'))]
        slower = [(r, p, x) for r, p, x in scope if x > 1.0]
        worst = max(((r, x) for r, _, x in scope), key=lambda t: t[1]) if scope else None
        what = ('BN training forward and backward faster than PyTorch/cuDNN on every shape' if gpu
                else 'every op at least as fast as PyTorch (clnorm/PyTorch <= 1.0)')
        detail = '%d of %d rows slower' % (len(slower), len(scope))
        # how many of them lie beyond the peer's own spread: clnorm's median above the peer's
        # 90th percentile (the rest are within the run-to-run noise of this machine)
        spread = [(r, p) for r, p, _ in slower if p.get('ms_p90') is not None]
        if spread:
            beyond = sum(r['ms'] > p['ms_p90'] for r, p in spread)
            detail += ' (%d of them with clnorm\'s median above PyTorch\'s 90th percentile)' % beyond
        if worst:
            w = worst[0]
            detail += '; worst %.2f (%s %s %s %s %s)' % (
                worst[1], w['family'], w['op'], w['variant'], w['layout'], w['shape'])
        out.append((what, not slower, detail))
    if gpu:
        big = [r for r in clnorm['rows'] if r['family'] == 'batchnorm' and
               r['op'] == 'forward_training' and r['variant'] == 'plain' and
               r['shape'] == 'N64 C64 H112 W112' and 'ms' in r]
        for r in big:
            frac3 = 3 * r['tensor_bytes'] / (r['ms'] * 1e6) / row_copy(clnorm, r)
            out.append(('training forward N64 C64 112x112 %s >= 90%% of copy at 3 passes'
                        % r['layout'], frac3 >= 0.9, '%.0f%% (%.3f ms)' % (100 * frac3, r['ms'])))
        for r, p, ratio in table:
            if r['shape'] == 'N32 C2048 H7 W7' and ratio is not None and r['variant'] == 'plain':
                out.append(('N32 C2048 7x7 %s %s at least 2x faster than cuDNN' % (
                    r['op'], r['layout']), ratio <= 0.5, 'ratio %.2f' % ratio))
        for r in clnorm['rows']:
            if (r['family'] in ('layernorm', 'rmsnorm') and r['op'] == 'forward' and
                    r['variant'] == 'plain' and 'ms' in r):
                out.append(('%s forward %s >= 85%% of copy at 2 passes' % (
                    r['family'], r['shape']), r['frac_copy'] >= 0.85,
                    '%.0f%% (%.3f ms)' % (100 * r['frac_copy'], r['ms'])))
    else:
        big = [r for r in clnorm['rows'] if r['family'] == 'batchnorm' and
               r['op'] == 'forward_training' and r['variant'] == 'plain' and
               r.get('tag') == 'resnet50-scaled' and 'ms' in r]
        for r in big:
            frac3 = 3 * r['tensor_bytes'] / (r['ms'] * 1e6) / row_copy(clnorm, r)
            out.append(('large-tensor training forward >= 50%% of copy at 3 passes: %s %s' % (
                r['shape'], r['layout']), frac3 >= 0.5, '%.0f%%' % (100 * frac3)))
    lat = clnorm.get('latency')
    if lat and lat.get('warm_ms') is not None:
        out.append(('warm first-call latency <= 100 ms', lat['warm_ms'] <= 100,
                    'warm %.1f ms, cold %.1f ms' % (lat['warm_ms'], lat['cold_ms'])))
    print('\ntargets (issue 5):')
    for what, met, detail in out:
        print('  [%s] %s: %s' % ('met ' if met else 'MISS', what, detail))
    return out


def plot(clnorm, peer, path):
    os.environ.setdefault('MPLBACKEND', 'Agg')
    try:
        try:
            import matplotlib
        except RuntimeError:
            # a Debian install whose matplotlibrc is not linked yet: point at the packaged one
            os.environ['MATPLOTLIBRC'] = '/usr/share/matplotlib/mpl-data/matplotlibrc'
            import matplotlib
    except ImportError:
        # e.g. the GPU machine's Python: the tables and the JSON are complete without the chart
        print('no matplotlib in %s: no chart (run plot.py on the combined JSON elsewhere)' %
              sys.executable)
        return
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    peer_rows = {key(r): r for r in peer['rows']} if peer else {}
    bn_rows = [r for r in clnorm['rows'] if r['family'] == 'batchnorm']
    ops = [o for o in ('forward_training', 'forward_inference', 'backward')
           if any(r['op'] == o for r in bn_rows)]
    fn_families = [f for f in ('layernorm', 'rmsnorm', 'groupnorm', 'instancenorm')
                   if any(r['family'] == f and 'GBps' in r for r in clnorm['rows'])]
    layouts = ['NCHW', 'NHWC']
    variants = ['plain', 'relu', 'add_relu']
    fn_variants = [('forward', 'plain'), ('forward', 'residual'), ('backward', 'plain')]
    fn_titles = {'layernorm': 'layer norm', 'rmsnorm': 'RMS norm', 'groupnorm': 'group norm',
                 'instancenorm': 'instance norm'}
    panel_rows = len(ops) + (len(fn_families) + 1) // 2
    fig, axes = plt.subplots(max(panel_rows, 1), 2, figsize=(18, 4.2 * max(panel_rows, 1)),
                             squeeze=False, sharey=True)
    blues = ['#08519c', '#3182bd', '#9ecae1']
    oranges = ['#a63603', '#e6550d', '#fdae6b']

    def bars(ax, rows, groups, series):
        """groups: x positions as (label, predicate); series: (name, predicate) per bar colour."""
        nbar = 2 * len(series)
        width = 0.8 / max(nbar, 1)
        for vi, (name, in_series) in enumerate(series):
            for tool, colors, offset in (('clnorm', blues, 0), ('PyTorch', oranges, 1)):
                xs, ys = [], []
                for gi, (_, in_group) in enumerate(groups):
                    r = next((r for r in rows if in_group(r) and in_series(r)), None)
                    if r is None:
                        continue
                    copy = row_copy(clnorm, r)
                    if tool == 'PyTorch':
                        r = peer_rows.get(key(r))
                    if r is None or 'GBps' not in r:
                        continue
                    xs.append(gi - 0.4 + width * (2 * vi + offset + 0.5))
                    ys.append(r['GBps'] / copy)
                ax.bar(xs, ys, width, color=colors[vi % 3], label='%s %s' % (tool, name))
        ax.axhline(1.0, color='grey', linewidth=0.8, linestyle='--')
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g[0] for g in groups], fontsize=8)

    for i, op in enumerate(ops):
        for j, layout in enumerate(layouts):
            ax = axes[i][j]
            rows = [r for r in bn_rows if r['op'] == op and r['layout'] == layout]
            shapes = []
            for r in rows:
                if r['shape'] not in shapes:
                    shapes.append(r['shape'])
            present = [v for v in variants if any(r['variant'] == v for r in rows)]
            bars(ax, rows, [(s.replace(' ', '\n', 1), lambda r, s=s: r['shape'] == s)
                            for s in shapes],
                 [(v, lambda r, v=v: r['variant'] == v) for v in present])
            ax.set_title('batch norm %s, %s' % (op.replace('_', ' '), layout), fontsize=10)
            if j == 0:
                ax.set_ylabel('fraction of copy bandwidth\n(compulsory bytes)')
            if i == 0 and j == 1:
                ax.legend(fontsize=8, ncol=2, loc='upper right')
    for k, family in enumerate(fn_families):
        ax = axes[len(ops) + k // 2][k % 2]
        rows = [r for r in clnorm['rows'] if r['family'] == family]
        groups = []
        for r in rows:
            g = (r['shape'], r['layout'])
            if g not in groups:
                groups.append(g)
        present = [v for v in fn_variants if any((r['op'], r['variant']) == v for r in rows)]
        bars(ax, rows,
             [((s.replace(' ', '\n', 1) + ('' if l == '-' else '\n' + l)),
               lambda r, s=s, l=l: (r['shape'], r['layout']) == (s, l)) for s, l in groups],
             [('%s %s' % v if v[1] != 'plain' else v[0],
               lambda r, v=v: (r['op'], r['variant']) == v) for v in present])
        title = fn_titles[family]
        if peer and 'composed' in peer.get('peers', {}).get(family, ''):
            title += ' (PyTorch peer composed of elementwise ops)'
        ax.set_title(title, fontsize=10)
        if k % 2 == 0:
            ax.set_ylabel('fraction of copy bandwidth\n(compulsory bytes)')
        ax.legend(fontsize=8, ncol=2, loc='upper right')
    if len(fn_families) % 2:
        axes[-1][1].set_visible(False)
    dev = clnorm['device']
    copy = clnorm['copy']
    copy_s = ('%.1f-%.1f GB/s (each part its own)' % tuple(copy['GBps_range'])
              if copy.get('parts', 1) > 1 else '%.1f GB/s' % copy['GBps'])
    fig.suptitle('clnorm %s vs %s on %s (%s), copy %s, %s' % (
        clnorm.get('commit', ''), peer['device'].get('driver', 'peer') if peer else 'no peer',
        dev['name'], dev.get('platform', dev.get('driver', '')), copy_s, clnorm.get('date', '')),
        fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    print('wrote %s' % path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('inputs', nargs='+')
    ap.add_argument('--combine', help='write all inputs as one run file')
    ap.add_argument('--png', help='write the chart here')
    ap.add_argument('--markdown', action='store_true', help='ratio table as Markdown')
    ap.add_argument('--pivot', action='store_true',
                    help='also a Markdown table: shapes x (op, layout), plain / fused ratios')
    args = ap.parse_args()
    docs = [d for p in args.inputs for d in load_docs(p)]
    clnorm = merge_tool(docs, 'clnorm')
    peer = merge_tool(docs, 'pytorch')
    if args.combine:
        with open(args.combine, 'w') as f:
            json.dump({'schema': 'clnorm-bench-run/1', 'runs': docs}, f, indent=1)
        print('wrote %s' % args.combine)
    if not clnorm:
        sys.exit('no clnorm-bench results among the inputs')
    table = print_tables(clnorm, peer, args.markdown)
    if peer:
        print_summary(clnorm, table)
        if args.pivot:
            print_pivot(clnorm, table)
    check_targets(clnorm, peer, table)
    if args.png:
        plot(clnorm, peer, args.png)


if __name__ == '__main__':
    main()
