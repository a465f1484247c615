"""Console-log parsing on the real trtexec logs, with exact numbers."""

from __future__ import annotations

from trt_fixtures import MNIST8_FAILED_LOG, MNIST8_LOG, MNIST10_LOG

from trtqat.trt.log import PerfSummary, failure_lines, parse_log, parse_stats, parse_summary


def test_trt10_16_summary_three_percentiles_no_trailing_space(fixtures):
    log = parse_log((fixtures / MNIST10_LOG).read_text())
    assert log.version == (10, 16, 1) and log.result == "PASSED" and log.passed
    assert log.command.startswith("trtexec --onnx=")
    s = log.summary
    assert s.throughput_qps == 15374.3
    assert s.latency.to_dict() == {
        "min": 0.0410156,
        "max": 0.14917,
        "mean": 0.0441053,
        "median": 0.0440674,
        "p90": 0.0450439,
        "p95": 0.0458984,
        "p99": 0.0512695,
    }
    assert s.enqueue.percentiles == {90.0: 0.0283203, 95.0: 0.0299072, 99.0: 0.0357666}
    assert (s.gpu_compute.min, s.gpu_compute.median, s.gpu_compute.percentiles[99.0]) == (
        0.0331421,
        0.0361328,
        0.041748,
    )
    assert (s.h2d.mean, s.d2h.max) == (0.00395853, 0.0341797)
    assert s.end_to_end is None
    assert (s.total_host_walltime_s, s.total_gpu_compute_s) == (3.00013, 1.6586)
    assert s.warnings == (
        (
            "GPU compute time is unstable, with coefficient of variance = 6.58751%. If not already "
            "in use, locking GPU clock frequency or adding --useSpinWait may improve the stability."
        ),
    )
    assert log.errors == ()


def test_trt8_2_summary_with_end_to_end_line(fixtures):
    s = parse_log((fixtures / MNIST8_LOG).read_text()).summary
    assert s.throughput_qps == 6199.99
    assert s.latency.to_dict() == {
        "min": 0.156128,
        "max": 0.428467,
        "mean": 0.159595,
        "median": 0.15918,
        "p99": 0.164795,
    }
    assert s.end_to_end.to_dict() == {
        "min": 0.164673,
        "max": 0.557129,
        "mean": 0.284975,
        "median": 0.289062,
        "p99": 0.297241,
    }
    assert (s.enqueue.median, s.gpu_compute.mean, s.d2h.percentiles) == (
        0.0498657,
        0.153115,
        {99.0: 0.00341797},
    )
    assert (s.total_host_walltime_s, s.total_gpu_compute_s, s.warnings) == (3.00049, 2.8484, ())
    assert s.images_per_s(4) == 6199.99 * 4


def test_trt8_4_grammar_single_percentile_without_end_to_end():
    text = """\
[06/14/2022-10:00:00] [I] === Performance summary ===
[06/14/2022-10:00:00] [I] Throughput: 1130.02 qps
[06/14/2022-10:00:00] [I] Latency: min = 0.87 ms, max = 1.2e+01 ms, mean = 0.88 ms, median = 0.879 ms, \
percentile(99%) = 0.9 ms
[06/14/2022-10:00:00] [I] Enqueue Time: min = 1.2e-05 ms, max = inf ms, mean = 0.01 ms, median = 0.01 ms, \
percentile(99%) = 0.02 ms
[06/14/2022-10:00:00] [I] GPU Compute Time: min = 0.86 ms, max = 0.9 ms, mean = 0.87 ms, median = 0.87 ms, \
percentile(99%) = 0.89 ms
[06/14/2022-10:00:00] [I] Total Host Walltime: 3.001 s
[06/14/2022-10:00:00] [W] * Throughput may be bound by Enqueue Time rather than GPU Compute
[06/14/2022-10:00:00] [I]\x20
[06/14/2022-10:00:00] [I] === Profile (3401 iterations ) ===
"""
    s = parse_summary(text)
    assert s.throughput_qps == 1130.02 and s.latency.max == 12.0 and s.enqueue.min == 1.2e-05
    assert s.enqueue.max == float("inf") and s.latency.percentiles == {99.0: 0.9}
    assert s.warnings == ("Throughput may be bound by Enqueue Time rather than GPU Compute",)
    assert s.h2d is None and s.end_to_end is None


def test_failed_stdout_only_log_has_no_error_text(fixtures):
    text = (fixtures / MNIST8_FAILED_LOG).read_text()
    log = parse_log(text)
    assert log.result == "FAILED" and not log.passed and log.errors == () and log.summary is None
    lines = failure_lines(text, tail=3)
    assert lines[0] == "(no [E] error lines in the log; trtexec writes errors to stderr)"
    assert lines[-1].startswith("&&&& FAILED TensorRT.trtexec [TensorRT v8203]")


def test_failure_lines_prefers_error_lines():
    text = "[01/01/2024-00:00:00] [I] ok\n[01/01/2024-00:00:00] [E] Error[4]: bad shape\n&&&& FAILED x\n"
    assert failure_lines(text) == ["Error[4]: bad shape"]


def test_summary_round_trips_through_dict(fixtures):
    s = parse_log((fixtures / MNIST10_LOG).read_text()).summary
    assert PerfSummary.from_dict(s.to_dict()) == s
    assert parse_stats("min = 1 ms, max = 2 ms") is None
