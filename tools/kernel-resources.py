#!/usr/bin/env python3
"""Static GPU resources of clnorm's kernels, without a GPU.

Compiles the norm program (kernels/common.cl + batchnorm.cl + groupnorm.cl, the order of
host/program.c) with the build options host/program.c would pass for each GPU row of the built-in
table (host/params.c), through LLVM's own GPU back ends with libclc's builtins:
  AMD row    -> amdgcn (gfx90a by default): VGPRs, scratch bytes and waves per SIMD, as the
                LLVM AMDGPU back end (the one ROCm's OpenCL compiler is built on) allocates them;
  NVIDIA row -> nvptx64: the local-memory stack (per work-item) of the PTX. NVIDIA's driver
                compiles OpenCL with its own LLVM-based compiler, so this is a proxy: an array
                that clang's PTX keeps on the stack (one not unrolled away) is likely on the stack
                there too. Register counts of PTX are virtual and not reported.
Intel has no LLVM back end here and is not checked.

With --check, fails when a kernel (every one of host/program.c's norm family; those only
work-groups of one launch are empty in a GPU build) keeps data in scratch / local memory beyond
its budget: none, except bn_channel's merge stack (stage 2: a few partials per channel), and on
nvptx the 16-byte spill of store_lanes' partial vector (a segment's last one only).

Needs clang-15 and libclc-15 (Debian packages of those names).
  python3 tools/kernel-resources.py [--check] [--amd-cpu gfx90a] [--params name=value,...]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLANG = os.environ.get("CLANG", "clang-15")
LIBCLC = os.environ.get("LIBCLC_DIR", "/usr/lib/clc")
# bytes of scratch / local memory allowed per work-item, by kernel and target
BUDGET = {"bn_channel": 2048}
NVPTX_PARTIAL_STORE = 16

# A kernel that must show a stack on both targets (an array indexed at run time): if the report
# shows none, the reading of the compiler's output is broken and every check would pass.
PROBE = """
__kernel void resources_probe(__global float *p, uint i)
{
    float a[64];
    for (uint j = 0; j < 64; j++)
        a[j] = p[j];
    p[0] = a[i & 63];
}
"""


def norm_program():
    """(sources, kernels) of the norm family in host/program.c's families table. Every kernel is
    checked: those only work-groups of one launch are empty in a GPU build (#if WG_SIZE == 1)."""
    text = open(os.path.join(ROOT, "host", "program.c")).read()
    m = re.search(r'\[FAMILY_NORM\]\s*=\s*\{"norm",\s*\{([^}]*)\},\s*\{([^}]*)\}', text)
    return re.findall(r'"(\w+)"', m.group(1)), set(re.findall(r'"(\w+)"', m.group(2)))


def param_names():
    text = open(os.path.join(ROOT, "host", "internal.h")).read()
    table = text[text.index("#define CLNORM_PARAM_TABLE"):]
    table = table[:table.index("typedef")]
    return re.findall(r"X\((\w+),", table)


def gpu_rows():
    """{vendor: {param: value}} of the GPU rows of host/params.c's table."""
    names = param_names()
    text = open(os.path.join(ROOT, "host", "params.c")).read()
    rows = {}
    for vendor, values in re.findall(
            r'\{"([^"]+)",[^{}]*CL_DEVICE_TYPE_GPU,\s*\{([-\d,\s]+)\}\}', text):
        vals = [int(v) for v in values.split(",")]
        rows[vendor] = dict(zip(names, vals))
    return rows


def build_options(p):
    """host/program.c's format_options (with -cl-fp32-correctly-rounded-divide-sqrt)."""
    block = p["block_vectors"]
    if p["vector_width"] == 1 and block % 2:
        block += 1
    return ["-DWG_SIZE=%d" % p["work_group_size"], "-DVEC=%d" % p["vector_width"],
            "-DITEMS=%d" % p["items_per_thread"], "-DCHANNEL_TILE=%d" % p["channel_tile"],
            "-DBLOCK_VECS=%d" % block, "-DITEM_TILE=%d" % p["item_tile"],
            "-DPLANE_TILE=%d" % p["plane_tile"],
            "-DROW_UNITS=%d" % (p["register_units"] if p["register_units"] > 0 else 1),
            "-DSHORT_UNITS=%d" % (p["register_short_units"]
                                  if p["register_short_units"] < p["register_units"] else 0),
            "-DGATHER_UNITS=%d" % p["gather_units"],
            "-DEW_STREAMS=%d" % p["elementwise_streams"],
            "-DROW_BLOCK_PARAM=%d" % p["row_block"],
            "-DFLAT_PLANES=%d" % p["flat_planes"],
            "-cl-fp32-correctly-rounded-divide-sqrt"]


def compile_to(target_args, bitcode, options, source, out):
    # -pedantic-errors: what OpenCL C 1.2 lacks and clang accepts as an extension (variadic
    # macros) fails here, as it fails NVIDIA's compiler, though PoCL's accepts it
    cmd = [CLANG] + target_args + ["-cl-std=CL1.2", "-O3", "-pedantic-errors"] + options + [
        "-Xclang", "-finclude-default-header", "-Xclang", "-mlink-builtin-bitcode",
        "-Xclang", os.path.join(LIBCLC, bitcode), "-Wno-linker-warnings", "-S", source, "-o", out]
    subprocess.run(cmd, check=True)
    return open(out).read()


def amdgcn_report(asm):
    """{kernel: (vgprs, agprs, scratch bytes, waves per SIMD)} from the back end's comments."""
    kernels = set(re.findall(r"\.amdhsa_kernel (\w+)", asm))
    out, name, info = {}, None, {}
    for line in asm.splitlines():
        m = re.match(r"^(\w+):\s+; @\w+", line)
        if m:
            name, info = m.group(1), {}
            continue
        m = re.match(r"^; (NumVgprs|NumAgprs|ScratchSize|Occupancy): (\d+)", line)
        if m and name:
            info[m.group(1)] = int(m.group(2))
            if m.group(1) == "Occupancy" and name in kernels:
                out[name] = (info.get("NumVgprs"), info.get("NumAgprs", 0),
                             info.get("ScratchSize"), info["Occupancy"])
    return out


def nvptx_report(ptx):
    """{kernel: local-memory stack bytes} of each .entry (everything is inlined)."""
    out = {}
    for chunk in re.split(r"\n(?=\.visible |\.entry |\.func |\.weak )", ptx):
        m = re.match(r"(?:\.visible )?\.entry (\w+)", chunk)
        if m:
            out[m.group(1)] = sum(int(b) for b in re.findall(r"__local_depot\d+\[(\d+)\]", chunk))
    return out


def unread(vendor, target, stack, kernels):
    """Problems of the reading itself: a kernel missing from the report, or the probe's stack not
    seen."""
    out = ["%s %s: no report for %s" % (vendor, target, k) for k in sorted(kernels - set(stack))]
    if not stack.get("resources_probe"):
        out.append("%s %s: the probe's stack array was not seen (output format changed?)" %
                   (vendor, target))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="fail on scratch beyond the budgets")
    ap.add_argument("--amd-cpu", default="gfx90a", help="amdgcn processor (default gfx90a)")
    ap.add_argument("--params", default="", help="name=value,... over every row (as CLNORM_PARAMS)")
    args = ap.parse_args()

    rows = gpu_rows()
    overrides = dict(kv.split("=") for kv in args.params.split(",") if kv)
    for p in rows.values():
        p.update({k: int(v) for k, v in overrides.items()})
    source = os.path.join(tempfile.mkdtemp(prefix="clnorm-resources-"), "norm.cl")
    with open(source, "w") as f:
        sources, kernels = norm_program()
        for name in sources:
            f.write(open(os.path.join(ROOT, "kernels", name + ".cl")).read() + "\n")
        f.write(PROBE)

    problems = []
    for vendor, p in rows.items():
        options = build_options(p)
        print("== %s row: %s" % (vendor, " ".join(o for o in options if o.startswith("-D"))))
        if vendor.startswith("Advanced Micro Devices"):
            report = amdgcn_report(compile_to(
                ["-target", "amdgcn-amd-amdhsa", "-mcpu=" + args.amd_cpu, "-nogpulib"],
                "amdgcn--amdhsa.bc", options, source, source + ".s"))
            print("   amdgcn %s (LLVM's allocation): kernel, VGPRs (+AGPRs), scratch bytes, "
                  "waves per SIMD" % args.amd_cpu)
            problems += unread(vendor, "amdgcn", {k: v[2] for k, v in report.items()}, kernels)
            for k in sorted(kernels & set(report)):
                vgpr, agpr, scratch, waves = report[k]
                print("   %-22s %4d%-5s %6d %3d" % (k, vgpr, "+%d" % agpr if agpr else "",
                                                     scratch, waves))
                if scratch > BUDGET.get(k, 0) or agpr:
                    problems.append("%s amdgcn: %s keeps %d bytes in scratch%s" % (
                        vendor, k, scratch, " and spills to %d AGPRs" % agpr if agpr else ""))
        elif vendor == "NVIDIA":
            report = nvptx_report(compile_to(["-target", "nvptx64--nvidiacl"],
                                             "nvptx64--nvidiacl.bc", options, source,
                                             source + ".ptx"))
            print("   nvptx64 (clang's PTX, a proxy for NVIDIA's compiler): kernel, local-memory "
                  "stack bytes per work-item")
            problems += unread(vendor, "nvptx64", report, kernels)
            for k in sorted(kernels & set(report)):
                print("   %-22s %6d" % (k, report[k]))
                if report[k] > BUDGET.get(k, NVPTX_PARTIAL_STORE):
                    problems.append("%s nvptx64: %s keeps %d bytes on the stack" %
                                    (vendor, k, report[k]))
        else:
            print("   (no LLVM back end for this vendor here: not checked)")
    if problems:
        print("\n".join(["", "over budget:"] + ["  " + p for p in problems]))
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
