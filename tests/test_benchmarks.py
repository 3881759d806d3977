"""The step-throughput benchmark runs end to end on the tiny GPT and writes a complete record (no timing assertions)."""

import json
import math
import mmap
import os
import subprocess
import sys

import pytest

from gptsovits_jax.allocator import allocator_env, find_jemalloc
from gptsovits_jax.environment import environment
from tests.conftest import load_benchmark

GPT_SHAPES = {"batch": 2, "text_len": 8, "semantic_len": 12}


@pytest.fixture(scope="module")
def gpt_record(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "step_throughput.jsonl"
    cmd = [
        sys.executable,
        str(repo_root / "benchmarks" / "step_throughput.py"),
        "--models",
        "gpt",
        "--sizes",
        "tiny",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--gpt-batch",
        str(GPT_SHAPES["batch"]),
        "--gpt-text-len",
        str(GPT_SHAPES["text_len"]),
        "--gpt-semantic-len",
        str(GPT_SHAPES["semantic_len"]),
        "--peak-size",
        "256",
        "--peak-repeats",
        "2",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        cmd, cwd=repo_root, env={**os.environ, "PYTHONPATH": str(repo_root)}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    stdout_records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert stdout_records == [json.loads(lines[0])]
    return json.loads(lines[0]), result.stderr


@pytest.mark.slow
def test_record_names_the_configuration(gpt_record):
    record, _ = gpt_record
    assert (record["benchmark"], record["model"], record["size"]) == ("step_throughput", "gpt", "tiny")
    assert record["config"] == "configs/tiny.yaml"  # relative to the repository, not this machine's directories
    assert record["machine"]["xla_flags"] == os.environ.get("XLA_FLAGS", "")
    assert {k: record[k] for k in GPT_SHAPES} == GPT_SHAPES
    assert record["steps"] == 1 and len(record["step_times_s"]) == 1
    assert "gpt_train.optim.grad_accum_steps=1" in record["overrides"]
    assert record["precision"] == "float32"


@pytest.mark.slow
def test_record_holds_machine_info(gpt_record):
    machine = gpt_record[0]["machine"]
    assert machine["backend"] == "cpu"
    assert machine["device_count"] >= 1 and machine["cpu_count"] >= 1
    assert len(machine["load_avg_start"]) == 3
    assert machine["jax_version"]
    # The default allocator is "auto": the child preloads jemalloc when this machine has it and LD_PRELOAD is unset.
    expected = allocator_env("auto")
    if "LD_PRELOAD" in expected:
        assert machine["allocator"] == "jemalloc"
        assert machine["allocator_env"]["LD_PRELOAD"] == expected["LD_PRELOAD"]
        assert machine["allocator_env"]["MALLOC_CONF"] == "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    else:
        assert machine["allocator_env"].get("LD_PRELOAD") == os.environ.get("LD_PRELOAD")


@pytest.mark.slow
def test_rates_follow_from_the_median_step_time(gpt_record):
    r = gpt_record[0]
    median = r["median_step_s"]
    assert median == r["min_step_s"] == r["step_times_s"][0] > 0
    assert r["steps_per_s"] == pytest.approx(1 / median)
    assert r["samples_per_s"] == pytest.approx(GPT_SHAPES["batch"] / median)
    assert r["tokens_per_s"] == pytest.approx(GPT_SHAPES["batch"] * (GPT_SHAPES["text_len"] + GPT_SHAPES["semantic_len"]) / median)
    assert r["audio_seconds_per_s"] is None
    (faults,) = r["minor_page_faults_per_step"]
    assert isinstance(faults, int) and faults >= 0  # counted by timed_call, tested below


def test_timed_call_counts_the_pages_the_call_touches():
    """Each step's ``minor_page_faults_per_step`` is ``timed_call``'s count: one fault per fresh 4 KiB page."""
    step_throughput = load_benchmark("step_throughput")
    pages = 4096

    def touch_fresh_pages(n):
        buffer = mmap.mmap(-1, n * mmap.PAGESIZE)
        buffer.madvise(mmap.MADV_NOHUGEPAGE)  # one fault per page, even where huge pages are the default
        for offset in range(0, n * mmap.PAGESIZE, mmap.PAGESIZE):
            buffer[offset] = 1
        buffer.close()
        return n

    result, seconds, faults = step_throughput.timed_call(touch_fresh_pages, pages)
    assert result == pages and seconds > 0
    assert pages <= faults < pages + 1000
    _, _, idle_faults = step_throughput.timed_call(lambda: None)
    assert idle_faults < 100


@pytest.mark.slow
def test_flops_are_reported_against_the_measured_peak(gpt_record):
    r = gpt_record[0]
    assert r["flops_per_step"] > 0
    assert r["achieved_flops_per_s"] == pytest.approx(r["flops_per_step"] / r["median_step_s"])
    peak = r["matmul_peak"]
    assert (peak["size"], peak["repeats"], peak["dtype"]) == (256, 2, "float32")
    assert peak["flops_per_s"] == pytest.approx(2 * 256**3 / peak["best_s"])
    assert r["fraction_of_matmul_peak"] == pytest.approx(r["achieved_flops_per_s"] / peak["flops_per_s"])
    # The peak is timed again right after every step, and each step is set against its own.
    (step_peak,) = r["interleaved_peak_flops_per_s"]
    assert step_peak > 0
    assert r["fraction_of_interleaved_peak"] == pytest.approx(r["flops_per_step"] / r["step_times_s"][0] / step_peak)


@pytest.mark.slow
def test_memory_and_compile_time_are_recorded(gpt_record):
    r = gpt_record[0]
    assert r["compile_s"] > 0 and r["peak_host_rss_mb"] > 0
    assert r["device_memory"] is None  # the CPU backend reports no memory statistics
    assert r["xla_memory"]["temp_size_in_bytes"] > 0
    assert math.isfinite(r["final_loss"])


@pytest.mark.slow
def test_table_lists_the_configuration(gpt_record):
    _, stderr = gpt_record
    assert "model" in stderr and "GFLOP/s" in stderr
    assert any(line.split()[:2] == ["gpt", "tiny"] for line in stderr.splitlines())


# A jitted function whose XLA:CPU temporary buffer is ~200 MB (above glibc's largest mmap threshold, 32 MB).
_FAULTS_SCRIPT = """
import resource, jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x), axis=0)[::-1].cumsum(axis=1).sum())
x = jnp.ones((4096, 4096), jnp.float32)
for _ in range(3):
    f(x).block_until_ready()
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


@pytest.mark.slow
def test_jemalloc_with_decay_off_keeps_xla_temporaries_mapped(repo_root):
    """The premise of ``--allocator``: the system allocator faults a large XLA:CPU temporary in anew on every call;
    jemalloc with its decay off does not."""
    if find_jemalloc() is None:
        pytest.skip("jemalloc is not installed (apt-get install libjemalloc2)")

    def faults_per_call(allocator: str) -> list[int]:
        # At the backend optimisation level training uses (the tests' level 0 makes this program 8x slower).
        xla_flags = os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "--xla_backend_optimization_level=3")
        with environment({**allocator_env(allocator), "XLA_FLAGS": xla_flags}):
            result = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return [int(n) for n in result.stdout.split()]

    # The system allocator faults on every call. jemalloc serves a call from the freed pages of an earlier one, except
    # when XLA allocates on a thread whose arena has not yet held such a block (seen under load): most calls, not all.
    system, jemalloc = faults_per_call("system"), faults_per_call("jemalloc")
    assert min(system) > 20_000, system  # >= 80 MB of fresh 4 KiB pages on every call
    assert sorted(jemalloc)[len(jemalloc) // 2] < min(system) / 10, (system, jemalloc)


def test_data_throughput_times_both_pipelines_and_appends_json_lines(repo_root, tmp_path, capsys):
    """The data benchmark on an 11-utterance subset: preprocesses into its own cache and reports both stages."""
    from tests.data.test_preprocess import demo_subset

    module = load_benchmark("data_throughput")
    out = tmp_path / "results" / "data.jsonl"
    argv = ["--configs", str(repo_root / "configs" / "tiny.yaml"), "--batches", "4", "--warmup", "1", "--out", str(out)]
    overrides = [f"data.list_path={demo_subset(tmp_path / 'corpus')}", f"data.cache_dir={tmp_path / 'cache'}", "data.eval_utterances=2"]
    overrides += ["data.num_workers=1", "sovits_train.batch_size=2", "gpt_train.batch_size=2"]
    for override in overrides:
        argv += ["--set", override]
    module.main(argv)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert printed == [json.loads(line) for line in out.read_text().splitlines()]
    (record,) = printed
    assert record["benchmark"] == "data_throughput" and record["overrides"] == overrides
    assert record["utterances"] == 11 and record["features_computed"] == 11
    for stage in ("sovits", "gpt"):
        result = record[stage]
        assert result["batch_size"] == 2
        assert result["batches_per_s"] > 0 and math.isfinite(result["batches_per_s"])
        assert result["utterances_per_s"] == pytest.approx(2 * result["batches_per_s"], rel=1e-9)
        assert 0.0 <= result["padded_fraction"] < 1.0
    assert record["gpt"]["semantic_tokens"] == "zeros"
    assert not (tmp_path / "cache" / "semantic.tsv").exists()  # the zero tokens never enter the cache


def test_feature_extraction_times_both_models_with_the_flax_half_here(repo_root, tmp_path):
    """The front-end benchmark at the tiny fixture configs: this venv has no torch, so auto picks the Flax half."""
    module = load_benchmark("feature_extraction")
    out = tmp_path / "fe.jsonl"
    hf = repo_root / "tests" / "fixtures" / "hf"
    argv = ["--audio-seconds", "0.5", "--chars", "9", "--repeats", "2", "--out", str(out)]
    argv += ["--hubert-config", str(hf / "tiny-hubert-bin" / "config.json"), "--bert-config", str(hf / "tiny-bert-bin" / "config.json")]
    record = module.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert record["backend"] == "flax" and record["benchmark"] == "feature_extraction" and record["python"]
    assert record["hubert"]["audio_seconds_per_s"] == pytest.approx(0.5 / record["hubert"]["median_s"])
    assert record["bert"]["chars_per_s"] == pytest.approx(9 / record["bert"]["median_s"])
    assert record["hubert"]["config"].endswith("tiny-hubert-bin/config.json")


def test_gpt_matmul_bound_counts_every_matmul_of_the_step():
    """FLOPs per matmul from the shapes, counts per step, and the bound derived from the timings."""
    module = load_benchmark("gpt_matmul_bound")
    argv = ["--size", "tiny", "--batch", "2", "--text-len", "8", "--semantic-len", "12", "--repeats", "2"]
    record = module.main([*argv, "--peak-size", "128", "--peak-repeats", "1"])
    assert record["machine"]["device_count"] >= 1 and record["machine"]["python_version"]  # the shared machine record
    gemms = {g["name"]: g for g in record["gemms"]}
    m, d, f, layers = 2 * 20, 64, 256, 2  # tiny: hidden 64, ffn 256, 2 layers, 4 heads of 16
    assert gemms["in_proj fwd"]["flops"] == 2 * m * d * 3 * d and gemms["in_proj fwd"]["count"] == layers
    assert gemms["linear2 dw"]["shapes"] == [[m, f], [m, d]] and gemms["linear2 dw"]["flops"] == 2 * m * f * d
    assert gemms["scores fwd"]["flops"] == 2 * (2 * 4) * 20 * 16 * 20
    assert "bert_proj dx" not in gemms and gemms["ar_predict_layer dx"]["count"] == 1
    assert len(gemms) == 4 * 3 * 1 + 2 * 3 + 2 + 3  # four dense layers, two batched products, bert_proj, logits
    total = sum(g["flops"] * g["count"] for g in record["gemms"])
    assert record["matmul_flops_per_step"] == total
    best = sum(g["best_s"] * g["count"] for g in record["gemms"])
    assert record["bound_flops_per_s"]["best"] == pytest.approx(total / best)
    assert record["bound_fraction_of_peak"]["best"] == pytest.approx(total / best / record["matmul_peak"]["flops_per_s"])


@pytest.mark.slow
def test_train_allocator_alternates_allocators_and_both_train_the_same(tmp_path):
    """The training-command A/B: a warm-up, then system and jemalloc runs, each process really on its allocator."""
    if find_jemalloc() is None:
        pytest.skip("jemalloc is not installed (apt-get install libjemalloc2)")
    out = tmp_path / "train_allocator.jsonl"
    argv = ["--stage", "gpt", "--synthetic", "--steps", "2", "--pairs", "1", "--workdir", str(tmp_path), "--out", str(out)]
    summary = load_benchmark("train_allocator").main(argv)
    *runs, last = [json.loads(line) for line in out.read_text().splitlines()]
    assert last == json.loads(json.dumps(summary))
    assert [(r["run"], r["allocator"], r["warmup"]) for r in runs] == [(0, "system", True), (1, "system", False), (2, "jemalloc", False)]
    assert [r["allocator_logged"] for r in runs] == ["system", "system", "jemalloc"]  # from each process's memory maps
    assert [r["last_step"] for r in runs] == [2, 2, 2]
    assert summary["same_last_loss"] and math.isfinite(runs[0]["last_loss"]["loss/ce"])
    assert (summary["system"]["runs"], summary["jemalloc"]["runs"]) == (1, 1)
    assert summary["jemalloc"]["median_wall_s"] == runs[2]["wall_s"]
    assert all(r["peak_rss_mb"] > 200 for r in runs)  # a process that imported jax and trained, not the launcher
    assert runs[1]["command"].startswith("gptsovits-jax --verbose --allocator system train-gpt --config configs/tiny.yaml")
    assert "<new dir>" in runs[1]["command"]


def test_train_allocator_refuses_gpt_without_synthetic_batches(capsys):
    with pytest.raises(SystemExit):
        load_benchmark("train_allocator").main(["--stage", "gpt"])
    assert "--stage gpt needs --synthetic" in capsys.readouterr().err


_HLO = """HloModule jit_step, is_scheduled=true

%fused_computation.1 (param_0: f32[8,4], param_1: f32[4,2]) -> f32[8,2] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %param_1 = f32[4,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,2]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main.9 (Arg_0.1: f32[8,4], /*index=1*/Arg_1.2: f32[4,2]) -> f32[8,2] {
  %Arg_0.1 = f32[8,4]{1,0} parameter(0)
  %Arg_1.2 = f32[4,2]{1,0} parameter(1)
  %ynn_fusion.3 = f32[8,2]{1,0} fusion(%Arg_0.1, %Arg_1.2), kind=kCustom, calls=%fused_computation.1, metadata={op_name="jit(step)/transpose(jvp(Model))/h/layers_3/linear1/dot_general"}
  %conditional.5 = (f32[8,2]{1,0}) conditional(%pred.6, %ynn_fusion.3), branch_computations={%fused_computation.1}
  ROOT %multiply_add_fusion.4 = f32[8,2]{1,0} add(%ynn_fusion.3, %ynn_fusion.3), metadata={op_name="jit(step)/cond/branch_1_fun/add"}
}
"""


def test_step_profile_attributes_events_to_modules_passes_and_matmuls():
    step_profile = load_benchmark("step_profile")
    instructions = step_profile.parse_hlo(_HLO)
    assert instructions["ynn_fusion.3"]["matmul"]  # through the fused computation it calls
    assert not instructions["multiply_add_fusion.4"]["matmul"]
    assert step_profile.attribute("jit(step)/jvp(Model)/h/layers_12/self_attn/in_proj/dot_general") == (
        "forward",
        "h/layers_N/self_attn/in_proj",
    )
    assert step_profile.attribute("jit(step)/transpose(jvp(Model))/dec/ups_2/dot_general", keep_indices=True) == ("backward", "dec/ups_2")
    events = [
        {"ph": "X", "name": "ynn_fusion.3", "dur": 3000.0},
        {"ph": "X", "name": "ynn_fusion.3", "dur": 1000.0},
        {"ph": "X", "name": "multiply_add_fusion.4", "dur": 2000.0},
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 9000.0},  # the runtime's own: left out
        {"ph": "X", "name": "conditional.5", "dur": 2000.0},  # encloses the events of its branch: left out
        {"ph": "X", "name": "copy.77", "dur": 500.0},  # not in this module: counted as unmatched
        {"ph": "M", "name": "thread_name"},
    ]
    rows, unmatched = step_profile.summarize(events, instructions, steps=2)
    assert unmatched == 1
    assert [(r["kind"], r["pass"], r["module"], r["ms_per_step"], r["events_per_step"]) for r in rows] == [
        ("matmul", "backward", "h/layers_N/linear1", 2.0, 1.0),
        ("other", "other", "cond/branch_1_fun", 1.0, 0.5),
    ]
    assert sum(r["fraction"] for r in rows) == pytest.approx(1.0)


@pytest.mark.slow
def test_step_profile_runs_on_the_tiny_gpt_step(repo_root, tmp_path):
    out = tmp_path / "profile.jsonl"
    cmd = [sys.executable, str(repo_root / "benchmarks" / "step_profile.py"), "--size", "tiny", "--steps", "1", "--warmup", "1"]
    cmd += ["--gpt-batch", "2", "--gpt-text-len", "8", "--gpt-semantic-len", "12", "--out", str(out), "--keep", str(tmp_path / "kept")]
    result = subprocess.run(
        cmd, cwd=repo_root, env={**os.environ, "PYTHONPATH": str(repo_root)}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["benchmark"], record["model"], record["size"], record["batch"]) == ("step_profile", "gpt", "tiny", 2)
    rows = {(r["kind"], r["pass"], r["module"]) for r in record["rows"]}
    for pass_ in ("forward", "backward"):
        assert ("matmul", pass_, "h/layers_N/linear1") in rows
    assert record["attributed_ms_per_step"] == pytest.approx(sum(r["ms_per_step"] for r in record["rows"]))
    assert record["unmatched_instruction_events"] == 0
    assert record["machine"]["xla_flags"] == os.environ.get("XLA_FLAGS", "")  # not the dump flags naming a temporary directory
    assert list((tmp_path / "kept").glob("trace/**/perfetto_trace.json.gz"))
    assert "h/layers_N/linear1" in result.stderr


def _throughput_record(date, step_times, step_peaks, best_peak, allocator_env, flops=1.0e12):
    return {
        "benchmark": "step_throughput",
        "model": "gpt",
        "size": "v2",
        "precision": "float32",
        "batch": 4,
        "text_len": 64,
        "semantic_len": 200,
        "date": date,
        "machine": {"load_avg_start": [1.0, 1.0, 1.0], "xla_flags": "", "allocator_env": allocator_env},
        "flops_per_step": flops,
        "step_times_s": step_times,
        "median_step_s": sorted(step_times)[len(step_times) // 2],
        "min_step_s": min(step_times),
        "matmul_peak": {"flops_per_s": best_peak},
        "interleaved_peak_flops_per_s": step_peaks,
    }


def test_peak_fractions_pairs_steps_and_peaks_every_way(tmp_path, capsys):
    """Each pairing from its closed form, groups split by allocator, runs reaching the target counted."""
    module = load_benchmark("peak_fractions")
    jemalloc = {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2", "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}
    # 1 TFLOP steps of 5, 4 and 10 s (median 5 s = 200 GFLOP/s), each followed by a peak sample; best peak 500 between steps.
    slow = _throughput_record("2026-11-27T01:00", [5.0, 4.0, 10.0], [400e9, 500e9, 200e9], 450e9, jemalloc)
    fast = _throughput_record("2026-11-27T02:00", [2.0, 2.0, 2.0], [250e9, 250e9, 250e9], 300e9, jemalloc)
    system = _throughput_record("2026-11-27T03:00", [4.0, 4.0, 4.0], [], 400e9, {})
    overridden = {**fast, "overrides": ["gpt_train.optim.skip_nonfinite=false"]}  # another configuration: its own group
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    files[0].write_text(json.dumps(fast) + "\n\n" + json.dumps({"benchmark": "step_profile"}) + "\n" + json.dumps(overridden) + "\n")
    files[1].write_text(json.dumps(slow) + "\n" + json.dumps(system) + "\n")
    out = tmp_path / "fractions.jsonl"
    module.main([*map(str, files), "--reference-peak", "400e9", "--target", "0.6", "--out", str(out)])
    summaries = {(s["allocator"], *s["overrides"]): s for s in map(json.loads, out.read_text().splitlines())}
    assert set(summaries) == {("jemalloc",), ("jemalloc", "gpt_train.optim.skip_nonfinite=false"), ("system",)}
    summaries = {key[0]: s for key, s in summaries.items() if len(key) == 1}

    runs = summaries["jemalloc"]["runs"]
    assert [run["date"] for run in runs] == ["2026-11-27T01:00", "2026-11-27T02:00"]  # sorted by date
    slow_run, fast_run = runs
    assert slow_run["best_peak_flops_per_s"] == 500e9  # the sample between the steps beats the record's best
    assert slow_run["median_step_vs_best_peak"] == pytest.approx(200e9 / 500e9)
    assert slow_run["best_step_vs_best_peak"] == pytest.approx(250e9 / 500e9)
    assert slow_run["paired"] == pytest.approx(0.5)  # median of 200/400, 250/500, 100/200
    assert slow_run["median_step_vs_median_peak"] == pytest.approx(200e9 / 400e9)
    assert slow_run["median_step_vs_reference"] == pytest.approx(0.5)
    assert fast_run["median_step_vs_best_peak"] == pytest.approx(500 / 300)
    assert fast_run["paired"] == pytest.approx(2.0)

    paired = summaries["jemalloc"]["fractions"]["paired"]
    assert paired == {"runs": 2, "median": pytest.approx(1.25), "min": 0.5, "max": 2.0, "runs_reaching_target": 1}
    system_fractions = summaries["system"]["fractions"]
    assert "paired" not in system_fractions and "median_step_vs_median_peak" not in system_fractions  # no per-step peaks
    assert system_fractions["median_step_vs_best_peak"]["median"] == pytest.approx(250 / 400)
    assert "runs >= 60.0%" in capsys.readouterr().err

    only_jemalloc = [json.loads(line) for line in _peak_fractions_stdout(module, files, capsys, "--allocator", "jemalloc")]
    assert [(s["allocator"], len(s["runs"])) for s in only_jemalloc] == [("jemalloc", 2), ("jemalloc", 1)]


def _peak_fractions_stdout(module, files, capsys, *flags):
    module.main([*map(str, files), *flags])
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_peak_fractions_names_the_file_and_line_of_a_broken_record(tmp_path):
    module = load_benchmark("peak_fractions")
    path = tmp_path / "broken.jsonl"
    path.write_text('{"benchmark": "step_throughput"}\n{"benchmark": \n')
    with pytest.raises(SystemExit, match=r"broken\.jsonl:2: not a JSON line"):
        module.main([str(path)])
    assert module.allocator_label({"allocator_env": {"LD_PRELOAD": "/x/libjemalloc.so.2", "MALLOC_CONF": "dirty_decay_ms:30000"}}) == (
        "jemalloc:dirty_decay_ms:30000"
    )
    assert module.allocator_label({}) == "unknown" and module.allocator_label({"allocator_env": {}}) == "system"


def test_step_memory_fits_memory_against_batch_and_finds_the_largest_batch():
    step_memory = load_benchmark("step_memory")
    gb = 1e9
    rows = [{"model": "gpt", "remat": "none", "seconds": 10.0, "batch": b, "total_bytes": int(1.5 * gb + 0.5 * gb * b)} for b in (1, 8)]
    rows.append({"model": "gpt", "remat": "none", "seconds": 5.0, "batch": 1, "total_bytes": 1})  # another length: ignored
    (fit,) = step_memory.largest_batches(rows)
    assert fit["fixed_gb"] == pytest.approx(1.5) and fit["per_row_gb"] == pytest.approx(0.5)
    # (16 - 1.5) / 0.5 = 29, (40 - 1.5) / 0.5 = 77, (80 - 1.5) / 0.5 = 157
    assert (fit["max_batch_16gb"], fit["max_batch_40gb"], fit["max_batch_80gb"]) == (29, 77, 157)
    # records with native convolutions get their own line: (16 - 1) / 0.25 = 60
    rows += [{**r, "native_convolutions": True, "total_bytes": int(1.0 * gb + 0.25 * gb * r["batch"])} for r in rows[:2]]
    fits = {f["native_convolutions"]: f for f in step_memory.largest_batches(rows)}
    assert fits[False]["max_batch_16gb"] == 29 and fits[True]["max_batch_16gb"] == 60


def test_step_memory_measures_every_requested_part(monkeypatch, capsys):
    """``--part`` reaches each measurement (it was once parsed and dropped): one record per part and batch."""
    step_memory = load_benchmark("step_memory")
    specs = []

    def fake_run(spec):
        specs.append(spec)
        memory = dict.fromkeys(step_memory.MEMORY_FIELDS, 0)
        total = int((1 + spec["batch"]) * 1e9)
        return {
            "benchmark": "step_memory",
            **spec,
            **memory,
            "total_bytes": total,
            "compile_s": 0.0,
            "compile_cpu_s": 0.0,
            "load_1min": [0.0, 0.0],
        }

    monkeypatch.setattr(step_memory, "_run_isolated", fake_run)
    step_memory.main(["--models", "sovits", "--batches", "1", "2", "--seconds", "4", "--part", "step", "disc", "grad_dec"])
    assert [(s["part"], s["batch"]) for s in specs] == [(p, b) for b in (1, 2) for p in ("step", "disc", "grad_dec")]
    assert all(s["model"] == "sovits" and s["remat"] == "none" and s["seconds"] == 4.0 for s in specs)
    assert not any(s["native_convolutions"] for s in specs)
    assert capsys.readouterr().out.count('"benchmark": "step_memory"') == 6
    step_memory.main(["--models", "sovits", "--batches", "1", "--seconds", "4", "--native-convolutions"])
    assert specs[-1]["native_convolutions"] and specs[-1]["part"] == "step"


def test_import_upstream_stand_ins_hold_the_manifests_keys_and_shapes_as_float16(repo_root):
    bench = load_benchmark("import_upstream")
    manifest = json.loads(bench.MANIFEST.read_text())
    small = {part: dict(list(manifest[part].items())[:5]) for part in ("gpt", "generator", "discriminator")}
    small["generator"]["quantizer.vq.layers.0._codebook.inited"] = manifest["generator"]["quantizer.vq.layers.0._codebook.inited"]
    for part, specs in small.items():
        weights = bench.stand_in_weights(part, small, seed=0)
        assert list(weights) == list(specs)
        assert all(weights[k].shape == tuple(s["shape"]) and weights[k].dtype == "float16" for k, s in specs.items())
    inited = bench.stand_in_weights("generator", small, seed=0)["quantizer.vq.layers.0._codebook.inited"]
    assert (inited == 1).all()
