"""`hpt bench` dispatches to the benchmark scripts (their --help here: the benchmarks themselves need a GPU)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("what,flag", [("kernels", "--bt"), ("step", "--seq")])
def test_hpt_bench_runs_the_script(what, flag):
    r = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "bench", what, "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert flag in r.stdout


def test_unknown_benchmark_is_one_line_exit_2():
    r = subprocess.run([sys.executable, "-m", "hybrid_posttrain.cli", "bench", "nope"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "invalid choice" in r.stderr


def test_probe_step_smoke_swaps_and_switches(repo):
    """benchmarks/probe_step.py (the NaN hunt of NOTES_gdn.md): a module swap and a part switched off run
    end to end on the CPU and print finite losses and grad norms per step."""
    import math
    import os

    conv = repo / "hybrid_posttrain" / "kernels" / "conv.py"
    out = subprocess.run([sys.executable, str(repo / "benchmarks" / "probe_step.py"), "--smoke", "--steps", "2",
                          "--unpacked", "--variant", f"swap=hybrid_posttrain.kernels.conv:{conv};off=rope"],
                         capture_output=True, text=True, timeout=300, cwd=repo,
                         env=dict(os.environ, TRITON_INTERPRET="0"))
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if "loss/gnorm per step" in x]
    assert len(line) == 1 and "FAILED" not in out.stdout
    pairs = line[0].split("per step:")[1].split("(")[0].strip().split(", ")
    assert len(pairs) == 2
    for p in pairs:
        loss, gnorm = (float(x) for x in p.rstrip("!").split("/"))
        assert math.isfinite(loss) and math.isfinite(gnorm) and not p.endswith("!")


@pytest.mark.parametrize("script, args, msg", [
    ("probe_step", ["--smoke", "--variant", "bogus=1"], "unknown variant item 'bogus=1'"),
    ("probe_step", ["--smoke", "--variant", "swap=x:/nonexistent/chunk.py"], "swap file /nonexistent/chunk.py not found"),
    ("probe_step", ["--smoke", "--set", "hidden_size"], "--set 'hidden_size': expected key=value"),
    ("gdn", ["--shapes", "olmo,llama"], "unknown shape 'llama'"),
    ("gdn", ["--bt", "8by4096"], "--bt '8by4096': expected BxT"),
    ("gdn", ["--resources", "fp16"], "unknown dtype 'fp16'"),
    ("gdn", ["--base", "/nonexistent/chunk.py"], "--base /nonexistent/chunk.py: no such file"),
    ("gdn", ["--sweep", "{"], "--sweep: expected a JSON list"),
    ("gdn", ["--sweep", '[{"bstate_wraps": 4}]'], "--sweep: each item: expected an object with keys among"),
    ("gdn", ["--sweep", '[{"dqk_stages": "4"}]'], 'dqk_stages="4": expected int like the default'),
    ("gdn", ["--fwd-only"], "--fwd-only applies to --sweep only"),
    ("gdn", ["--agree", '[{"state_stagse": 1}]'], "--agree: each item: expected an object with keys among"),
    ("gdn", ["--fp32"], "--fp32 applies to --agree only"),
    ("gdn", ["--host", "--sweep", "[{}]"], "--host runs on its own"),
    ("gdn", ["--host", "--json", "out.json"], "--host runs on its own"),
    ("gdn", ["--hard", "--sweep", "[{}]"], "--hard runs on its own"),
    ("gdn", ["--hard", "--resources", "bf16"], "--hard runs on its own"),
    ("conv", ["--configs", "{"], "--configs: expected a JSON list of objects"),
    ("conv", ["--configs", '[{"wraps": 4}]'], "keys among bt, bc, warps"),
    ("conv", ["--splits", "1536,x"], "expected comma-separated positive integers"),
    ("gluon_out", ["--shapes", "nope"], "unknown shape 'nope'"),
    ("gluon_out", ["--shapes", "gdn13b"], "does not take key dim 256"),
    ("gluon_out", ["--bt", "8by4096"], "--bt '8by4096': expected BxT"),
    ("gluon_out", ["--warps", "6"], "4 or 8 warps"),
    ("gluon_out", ["--warps", "four"], "expected items W[:R[:S[:B]]]"),
    ("gluon_bwd", ["--shapes", "gdn13b"], "does not take key dim 256"),
    ("gluon_bwd", ["--bt", "8x"], "--bt '8x': expected BxT"),
    ("gluon_bwd", ["--warps", "2"], "4 or 8 warps"),
    ("gluon_bwd", ["--warps", "4:0:3"], "slots are 1 or 2 (0: the rule's)"),
    ("gluon_bwd", ["--kernel", "dq"], "--kernel 'dq': expected one of dqk, wy, prep"),
    ("gluon_bwd", ["--kernel=wi"], "--kernel 'wi': expected one of dqk, wy, prep"),
    ("gluon_bwd", ["--kernel", "wy", "--warps", "4:0:2:32", "--offline"], "--kernel wy takes value blocks of 64 only"),
    ("gluon_out", ["--warps", "4:x"], "expected items W[:R[:S[:B]]] of integers"),
    ("gluon_out", ["--warps", "4:0:1:64:1"], "4 or 8 warps, each optionally :registers[:slots[:value block]]"),
    ("gluon_out", ["--warps", "4:0:1:48"], "a value block of 32 or 64"),
])
def test_benchmark_bad_input_is_one_line_exit_2(repo, script, args, msg):
    """The benchmark scripts check their arguments before they touch a GPU or start a child per config (each
    of these was a traceback, or for an unknown --sweep key a silent run of the defaults)."""
    out = subprocess.run([sys.executable, str(repo / "benchmarks" / f"{script}.py"), *args],
                         capture_output=True, text=True, timeout=120, cwd=repo)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and msg in out.stderr, out.stderr[-1000:]


def _bench_module(stem):
    """benchmarks/<stem>.py loaded as a module (benchmarks/ is not a package on the path)."""
    spec = importlib.util.spec_from_file_location(f"bench_{stem}", REPO / "benchmarks" / f"{stem}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _gdn_bench():
    return _bench_module("gdn")


def _one_line_exit_2(out, msg):
    """A user error: exit status 2, nothing on stdout, one line on stderr that says msg."""
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and msg in out.stderr, out.stderr


def test_hard_inputs_nearly_share_a_key_direction():
    """`gdn.py --hard`'s inputs: bf16 q / k / v / beta and fp32 g; with nearly parallel keys every key of a head lies
    within a few degrees of one direction, beta is in [1.9, 2] and the decay is slow, while random keys are spread
    (their cosines near 0); both share q, v and the output gradient's distribution."""
    gdn = _gdn_bench()

    def cos(k):  # cosines between the keys of head 0
        kn = torch.nn.functional.normalize(k[0, :, 0].float(), dim=-1)
        return kn @ kn.T

    (q, k, v, g, beta), do = gdn.hard_inputs(100, 2, 4, 32, 16, True, device="cpu")
    assert [x.dtype for x in (q, k, v, beta, do)] == [torch.bfloat16] * 5 and g.dtype == torch.float32
    assert k.shape == (1, 100, 2, 32) and v.shape == do.shape == (1, 100, 4, 16) and g.shape == beta.shape == (1, 100, 4)
    assert cos(k).min() > 0.99  # within 8 degrees
    assert beta.float().min() >= 1.89 and beta.float().max() <= 2.0 and (g == -0.01).all()
    (_, k2, _, g2, beta2), _ = gdn.hard_inputs(100, 2, 4, 32, 16, False, device="cpu")
    off = cos(k2)[~torch.eye(100, dtype=torch.bool)]
    assert off.abs().mean() < 0.3 and (g2 < 0).all() and beta2.float().min() < 1.0


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_host_parts_times_the_driver_and_puts_it_back(monkeypatch):
    """`gdn.py --host` times the driver's functions by wrapping them for the measurement: each part is timed
    (inclusive: _fwd holds its launches, the call holds all), and afterwards the module has its own functions back,
    also where the call fails."""
    from hybrid_posttrain.kernels.gdn import chunk as hc

    bench = _gdn_bench()
    before = {nm: getattr(hc, nm) for nm in bench.HOST_PARTS}
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    xs = [x.to(dev) for x in (torch.randn(1, 64, 1, 16), torch.randn(1, 64, 1, 16), torch.randn(1, 64, 1, 16),
                              -torch.rand(1, 64, 1), torch.rand(1, 64, 1))]
    parts = bench.host_parts(bench.fb_fn(hc.chunk_gated_delta_rule, xs, torch.randn(1, 64, 1, 16, device=dev)), n=2)
    assert {"_fwd", "_bwd", "_run", "_launch", "launches", "_empty", "call"} <= set(parts)
    assert all(v > 0 for v in parts.values())
    assert parts["call"] >= parts["_fwd"] + parts["_bwd"] >= parts["_run"] + parts["_launch"]
    assert {nm: getattr(hc, nm) for nm in bench.HOST_PARTS} == before

    def fails():
        hc._fwd(*[None] * 10)  # q None: q.shape raises

    with pytest.raises(AttributeError):
        bench.host_parts(fails, n=1)
    assert {nm: getattr(hc, nm) for nm in bench.HOST_PARTS} == before


def test_busy_time_counts_overlapping_kernels_once():
    """The table's GPU busy time is the union of the kernels' spans: kernels on two streams at once count once, gaps
    not at all, in any order."""
    covered = _gdn_bench().covered
    assert covered([]) == 0
    assert covered([(0, 10), (20, 25)]) == 15
    assert covered([(20, 25), (5, 15), (0, 10)]) == 20  # overlapping, unsorted
    assert covered([(0, 30), (5, 15), (10, 12)]) == 30  # nested
    assert covered([(0, 10), (10, 20)]) == 20  # touching


def test_loop_loads_counts_staged_and_synchronous_tile_loads():
    """`benchmarks/gdn.py --resources` lists, per kernel, the loads inside its loops that the pipeliner staged
    (async copies) and the tile loads it left synchronous; loads outside any loop, vector loads and a loop's
    closing brace are told apart."""
    ttgir = """
    %bos = tt.load %p : !tt.ptr<i32>
    %b_k_88 = tt.load %q, %m : tensor<64x128x!tt.ptr<bf16>, #blocked>
    %h_1 = ttg.async_copy_global_to_local %a, %b mask %c {contiguity = 8 : i32} : tensor<128x64x!tt.ptr<bf16>> -> <>
    %r:3 = scf.for %i = %c0 to %c2 step %c1 iter_args(%x = %y) -> (tensor<64xf32>) {
      %h_2 = ttg.async_copy_global_to_local %a, %b mask %c {contiguity = 8 : i32} : tensor<128x64x!tt.ptr<bf16>> -> <>
      %b_v_308 = tt.load %v, %m, %o : tensor<64x64x!tt.ptr<bf16>, #blocked1>
      %b_g_1 = tt.load %g, %m : tensor<64x!tt.ptr<f32>, #ttg.slice<{dim = 1, parent = #mma}>>
      %z = scf.if %cond -> (tensor<64xf32>) {
        %dkp_3 = tt.load %d, %m : tensor<64x128x!tt.ptr<bf16>, #blocked>
        scf.yield %w : tensor<64xf32>
      }
      scf.yield %s : tensor<64xf32>
    }
    %after = tt.load %q2, %m : tensor<64x128x!tt.ptr<bf16>, #blocked>
    """
    assert _gdn_bench().loop_loads(ttgir) == (1, ["b_v", "dkp"])
    # ... and the loads after the first loop, outside loops (an epilogue's waits): vectors too, scalars not
    assert _gdn_bench().late_loads(ttgir) == ["after"]
    tail = """
    %b_dkp_3 = tt.load %d, %m : tensor<64x128x!tt.ptr<bf16>, #blocked>
    %b_dgp = tt.load %g, %m : tensor<64x!tt.ptr<f32>, #blocked1>
    %gL = tt.load %p2 : !tt.ptr<f32>
    """
    assert _gdn_bench().late_loads(ttgir + tail) == ["after", "b_dkp", "b_dgp"]
    assert _gdn_bench().late_loads(tail) == []  # no loop before them


def test_sass_counts_reads_opcodes_past_predicates_and_modifiers():
    """`--resources` counts a kernel's SASS instructions and its barriers, shared stores / loads and wgmma products:
    predicated instructions count under their opcode, modifiers are dropped, and encoding lines, labels and headers
    are not instructions."""
    sass = """
        code for sm_90a
                Function : _bwd_dqk
        /*0000*/                   LDC R1, c[0x0][0x28] ;                    /* 0x00000a00ff017b82 */
                                                                             /* 0x000e700000000800 */
        /*0010*/              @!P0 BAR.SYNC.DEFER_BLOCKING 0x0 ;             /* 0x0000000000008b1d */
        /*0020*/                   STS.128 [R3], R4 ;                        /* 0x0000000403007388 */
        /*0030*/               @P1 STS [R5], R6 ;                            /* 0x0000000605007388 */
        /*0040*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], RZ ;  /* 0x01e00000181879f0 */
        /*0050*/              @UP0 LDS.U.64 R8, [R2] ;                       /* 0x0000000002087984 */
        /*0060*/                   BAR.ARV 0x1, 0x100 ;                      /* 0x0000000000007b1d */
        .L_x_12:
        /*0070*/                   EXIT ;                                    /* 0x000000000000794d */
    """
    assert _gdn_bench().sass_counts(sass) == {"instructions": 8, "BAR": 2, "STS": 2, "LDS": 1, "HGMMA": 1}


def test_programs_per_sm_takes_the_tightest_sm90_limit():
    """Programs per SM from registers, shared memory and warps, as sm_90 allocates them; the numbers of this
    project's kernels (sm_90, Triton 3.6) as cases."""
    pps = _gdn_bench().programs_per_sm
    assert pps(255, 8, 152 * 1024) == (1, "registers")  # _bwd_wy: 256 registers x 256 threads = the whole file
    assert pps(168, 4, 48 * 1024) == (3, "registers")  # _fwd_prep64 under its 168-register cap
    assert pps(185, 4, 48 * 1024) == (2, "registers")  # ... without it (185 rounds up to 192)
    assert pps(194, 4, 97 * 1024) == (2, "registers")  # _fwd_state
    assert pps(255, 4, 137 * 1024) == (1, "shared")  # Qwen3-Next _bwd_state
    assert pps(255, 4, 113 * 1024) == (2, "registers")  # 113 KB: two fit by shared memory (2 x 114 <= 228)
    assert pps(16, 4, 0) == (16, "warps")
    assert pps(16, 1, 0) == (32, "programs")


def test_gdn_resources_report_every_kernel_offline():
    """The offline sm_90 compile (no GPU) reports registers, stack, shared memory, loop loads and L2 prefetch
    instructions for every kernel the driver launches; the per-chunk backward kernels stage their tile loads, and
    `_bwd_wy` alone prefetches (off with pf_wy). Under the Triton interpreter (which compiles nothing) it is one
    line and exit 2."""
    import os

    cmd = [sys.executable, str(REPO / "benchmarks" / "gdn.py"), "--resources", "bf16", "--shapes", "qwen"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TRITON_INTERPRET="1"))
    assert r.returncode == 2 and "the Triton interpreter cannot" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, TRITON_INTERPRET="0"))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = {ln.split()[2]: ln for ln in r.stdout.splitlines() if ln.startswith("bf16")}
    assert {"_fwd_prep64", "_fwd_state", "_fwd_out", "_bwd_dlocal", "_bwd_state", "_bwd_dqk", "_bwd_wy"} <= set(lines)
    for name in ("_bwd_dqk", "_bwd_wy"):
        staged = int(lines[name].split("loop loads ")[1].split()[0])
        assert staged >= 3, lines[name]
        assert " per SM (by " in lines[name], lines[name]
        sass = lines[name].split("; SASS ")[1].split(";")[0]  # N instructions, N BAR, N STS, N LDS, N HGMMA
        counts = {kv.split()[1]: int(kv.split()[0]) for kv in sass.split(", ")}
        assert counts["instructions"] > 1000 and counts["HGMMA"] > 0 and counts["BAR"] > 0, lines[name]
    # `_bwd_wy` prefetches its dk part into L2 (inline PTX, CONFIG pf_wy), and no other kernel does
    prefetches = {name: int(ln.split("; ")[-1].split()[0]) for name, ln in lines.items()}
    assert prefetches.pop("_bwd_wy") > 0 and set(prefetches.values()) == {0}, prefetches
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, TRITON_INTERPRET="0", HPT_GDN_CONFIG='{"pf_wy": false}'))
    wy = [ln for ln in r.stdout.splitlines() if ln.startswith("bf16") and ln.split()[2] == "_bwd_wy"]
    assert r.returncode == 0 and len(wy) == 1 and wy[0].endswith("; 0 L2 prefetch instructions"), r.stdout[-2000:]


@pytest.mark.parametrize("script, args, env, msg", [
    ("gdn", ["--resources", "bf16"], {"HPT_GDN_CONFIG": '{"bv": "x"}'}, 'HPT_GDN_CONFIG: bv="x": expected int'),
    ("conv", ["--configs", "[{}]"], {"HPT_CONV_CONFIG": '{"wraps": 4}'}, "HPT_CONV_CONFIG: expected an object"),
])
def test_benchmark_bad_kernel_knob_is_one_line_exit_2(repo, script, args, env, msg):
    """A kernel knob the kernels refuse at import or launch (KernelEnvError) ends a benchmark script with one
    line and exit status 2 (run_script), not a traceback."""
    import os

    out = subprocess.run([sys.executable, str(repo / "benchmarks" / f"{script}.py"), *args], capture_output=True,
                         text=True, timeout=120, cwd=repo, env=dict(os.environ, TRITON_INTERPRET="0", **env))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and msg in out.stderr, out.stderr[-1000:]


@pytest.mark.parametrize("args,msg", [([], "unknown part ''"), (["tabel"], "unknown part 'tabel'"),
                                      (["tests", "3", "2"], "tests needs I and N"),
                                      (["tests", "1"], "tests needs I and N"),
                                      (["table", "x"], "table takes no more arguments"),
                                      (["host", "2x4096"], "host takes no more arguments"),
                                      (["rest", "done.txt"], "rest needs DONE (a file of node ids) and SECONDS"),
                                      (["rest", "done.txt", "0"], "rest needs DONE"),
                                      (["rest", "done.txt", "9m"], "rest needs DONE"),
                                      (["rest", "no/such/done.txt", "60"], "rest: no file 'no/such/done.txt'"),
                                      (["passed"], "passed needs LOG"),
                                      (["passed", "no/such/log.txt"], "passed needs LOG"),
                                      (["ncu", "qwen"], "ncu needs SHAPE and BxT"),
                                      (["ncu", "qwen", "8by4096"], "ncu needs SHAPE and BxT")])
def test_gpu_check_bad_arguments_are_one_line_exit_2(args, msg):
    """benchmarks/gpu_check.sh (the device-call-sized GPU checks) refuses bad arguments before it installs or
    runs anything."""
    _one_line_exit_2(subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), *args], capture_output=True,
                                     text=True, timeout=60, cwd=REPO), msg)


def test_gpu_check_passed_ids_keep_spaces(tmp_path):
    """`gpu_check.sh passed LOG` (what `rest` writes to passed.txt, the ids the next call skips) gives every id a
    pytest -v log shows PASSED, whole where a parametrised id holds spaces, and no failed or unfinished one."""
    log = tmp_path / "rest.txt"
    log.write_text(
        "not yet done: 4 tests\n"
        "tests/kernels/test_gdn.py::test_a[H2-HV2-K96-V192] PASSED [ 25%]\n"
        "tests/kernels/test_gdn.py::test_env[gdn.chunk-env0-HPT_GDN_CONFIG is not JSON] PASSED [ 50%]\n"
        "tests/kernels/test_gdn.py::test_b FAILED [ 75%]\n"
        "tests/kernels/test_gdn.py::test_c[x PASSED y] \n")
    out = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "passed", str(log)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["tests/kernels/test_gdn.py::test_a[H2-HV2-K96-V192]",
                                       "tests/kernels/test_gdn.py::test_env[gdn.chunk-env0-HPT_GDN_CONFIG is not JSON]"]


NCU_CSV = REPO / "tests" / "fixtures" / "ncu_olmo_8x4096_raw.csv"  # ncu 2025.3's raw page (H100, session 23), columns cut


def test_ncu_table_reads_a_real_raw_page():
    """`gdn_ncu.py table` on Nsight Compute's raw CSV page of one no-grad forward and one forward+backward (Olmo-Hybrid
    8x4096, H100): every kernel in launch order, durations from ms to us, the throughput / occupancy columns, and the
    stall reasons sorted, without the issue cycle ("selected")."""
    m = _bench_module("gdn_ncu")
    recs = m.parse(str(NCU_CSV), top=3)
    assert [r["name"] for r in recs] == ["_fwd_prep64", "_fwd_state", "_fwd_out"] * 2 + ["_bwd_state_ks", "_bwd_dqk",
                                                                                          "_bwd_wy"]
    assert recs[0]["us"] == pytest.approx(699.456) and recs[7]["us"] == pytest.approx(1409.1, abs=0.1)
    assert recs[0]["registers"] == 168 and recs[2]["registers"] == 255
    assert recs[2]["DRAM %"] == pytest.approx(67.6, abs=0.05) and recs[0]["occupancy %"] == pytest.approx(18.48, abs=0.01)
    for r in recs:
        vals = [v for _, v in r["stalls"]]
        assert len(vals) == 3 and vals == sorted(vals, reverse=True)
        assert "selected" not in dict(r["stalls"])
        assert sum(vals) < r["warp cycles / inst"]  # parts of the whole
    assert recs[2]["stalls"][0][0] == "long_scoreboard" and recs[8]["stalls"][0][0] == "barrier"
    lines = m.table(recs).splitlines()
    assert len(lines) == 2 + 9 and lines[2].startswith("| 0 | _fwd_prep64 | 699.5 |")


def _ncu_script(*args):
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "gdn_ncu.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("content, msg", [
    ("a,b\n1,2\n", "not ncu's raw CSV page"),
    ('"ID","Kernel Name","x"\n"","","%"\n"0","_k","1"\n', "no gpu__time_duration.sum column"),
    ('"ID","Kernel Name","gpu__time_duration.sum"\n"","","fortnight"\n"0","_k","1"\n', "unknown duration unit"),
    ('"ID","Kernel Name","gpu__time_duration.sum"\n"","","ms"\n', "no kernel rows"),
    ('"ID","Kernel Name","gpu__time_duration.sum"\n"","","ms"\n"0","_k"\n', "kernel row 0: 2 fields, the header has 3"),
    ('"ID","Kernel Name","gpu__time_duration.sum"\n"","","ms"\n"0","_k","fast"\n', "kernel row 0: could not convert"),
])
def test_ncu_table_bad_csv_is_one_line_exit_2(tmp_path, content, msg):
    f = tmp_path / "raw.csv"
    f.write_text(content)
    _one_line_exit_2(_ncu_script("table", str(f)), msg)


def test_ncu_bad_arguments_are_one_line_exit_2(tmp_path):
    _one_line_exit_2(_ncu_script("table", str(tmp_path / "missing.csv")), "No such file")
    _one_line_exit_2(_ncu_script("table", str(NCU_CSV), "--top", "0"), "--top must be at least 1")
    _one_line_exit_2(_ncu_script("run", "--bt", "8by4096"), "--bt '8by4096': expected BxT")
    _one_line_exit_2(_ncu_script("run", "--shape", "llama"), "unknown shape 'llama'")


def test_ptx_hash_follows_the_code_not_the_source_lines():
    """The offline compiles' PTX hash (gluon_out.py / gluon_bwd.py --offline), which checks that a refactor of a Gluon
    kernel generates the same code: line information does not move it, an instruction does."""
    ptx_hash = _bench_module("gluon_out").ptx_hash
    a = ".version 8.7\n.loc 1 10 3\nadd.f32 %f1, %f2, %f3;\n$L__tmp0:\n// a comment\n"
    moved = ".version 8.7\n.loc 1 42 7\nadd.f32 %f1, %f2, %f3;\n$L__tmp9:\n// another\n"
    other = ".version 8.7\n.loc 1 10 3\nmul.f32 %f1, %f2, %f3;\n"
    debug = a + ".section .debug_info\n{ .b32 1 }\n"
    assert ptx_hash(a) == ptx_hash(moved) == ptx_hash(debug) != ptx_hash(other)
    assert len(ptx_hash(a)) == 12


def test_gluon_bwd_table_names_what_the_driver_has():
    """gluon_bwd.py's table of kernels: each Gluon module's CONFIG switch, its kernel and the Triton kernel it stands
    in for exist, and the recorded outputs are the Triton kernel's parameters of those names (a renamed piece is
    caught here, not first on a GPU)."""
    from hybrid_posttrain.kernels.gdn import chunk

    bwd = _bench_module("gluon_bwd")
    for name, (mod, fname, tname, outs, zi, _, _) in bwd.KERNELS.items():
        assert bwd.switch(mod) in chunk.CONFIG, name
        assert mod.gluon is None or hasattr(mod, fname), name
        params = getattr(chunk, tname).arg_names
        assert [params[i].removesuffix("_out") for i in outs] == list(outs.values()), name
        assert zi is None or zi in outs, name
