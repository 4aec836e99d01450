"""The report's view of the newer ops, from hand-made GPU rows: the break-even figure, table
and sentence (transfers included, nothing estimated), the training step's breakdown, create
on the device against on the host, and copies held to the link."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench_suite.core.cases import Case, is_cuda_backend, square_shape
from bench_suite.report import figures, render, tables
from bench_suite.report.format import fmt_rate
from bench_suite.store.results import Measurement, Run, to_frame

# seconds per call on "gpubox", chosen so the break-even can be worked out by hand
NUMPY_MM = {128: 1e-4, 256: 8e-4, 512: 6.4e-3, 1024: 5.1e-2}
CUDA_MM = {128: 2e-5, 256: 4e-5, 512: 2e-4, 1024: 1.2e-3}
PAGEABLE = {128: 3e-5, 256: 1e-4, 512: 4e-4, 1024: 1.6e-3}  # h2d = d2h of one n x n array
PINNED = {n: t / 2 for n, t in PAGEABLE.items()}
NUMPY_LIN = {128: 8e-5, 256: 9e-4, 512: 7e-3}
CUDA_LIN = {128: 3e-5, 256: 5e-5, 512: 2.5e-4}
LINK = {"kind": "pcie", "generation": 4, "width": 16, "source": "nvml"}


def m(op: str, backend: str, n: int, t: float, variant: str = "", threads: int | None = None,
      dtype: str = "float32", extra: dict[str, Any] | None = None) -> Measurement:
    case = Case(op, backend, dtype, square_shape(op, n), threads, variant=variant)
    return Measurement(case, "ok", samples_s=(t,) * 5, number=1, stop="converged",
                       threads=None if is_cuda_backend(backend) else (threads or 4),
                       device_name="Fake GPU" if is_cuda_backend(backend) else "Fake CPU",
                       extra=extra or {})


def gpubox(drop: Sequence[tuple[str, str, int]] = ()) -> list[Measurement]:
    out = []
    for n in NUMPY_MM:
        out += [m("matmul", "numpy", n, NUMPY_MM[n]), m("matmul", "torch-cuda", n, CUDA_MM[n])]
        for op in ("h2d", "d2h"):
            out += [m(op, "torch-cuda", n, PAGEABLE[n]),
                    m(op, "torch-cuda", n, PINNED[n], variant="pinned")]
    for n in NUMPY_LIN:
        out += [m("linear", "numpy", n, NUMPY_LIN[n]), m("linear", "torch-cuda", n, CUDA_LIN[n])]
    # float64 matmul on the GPU, but no float64 copies: no round trip there, and a note
    out += [m("matmul", "numpy", 256, 2e-3, dtype="float64"),
            m("matmul", "torch-cuda", 256, 1e-4, dtype="float64")]
    return [x for x in out if (x.case.op, x.case.variant, x.case.n) not in set(drop)]


def make_run(machine: str, ms: Sequence[Measurement], gpus: bool = True) -> Run:
    env = {"cpu": {"model": "Fake CPU", "usable_cores": 4},
           "torch": {"gpus": [{"index": 0, "name": "Fake GPU", "link": LINK}] if gpus else []}}
    return Run(f"run-{machine}", machine, "2026-01-01T00:00:00+00:00", env,
               {"argv": ["run", "--preset", "default"]}, tuple(ms), "2026-01-01T00:01:00+00:00", True)


def one(df: pd.DataFrame, **where: object) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for col, value in where.items():
        mask &= df[col] == value
    rows = df[mask]
    assert len(rows) == 1, f"{len(rows)} rows match {where}"
    return rows.iloc[0]


def test_the_round_trip_is_built_from_measured_rows_only() -> None:
    be = tables.break_even(to_frame([make_run("gpubox", gpubox())]))
    trip = one(be, op="matmul", dtype="float32", n=256, way="round_trip", memory="pageable")
    assert trip["time_s"] == pytest.approx(2 * 1e-4 + 4e-5 + 1e-4)  # A and B in, C back
    assert (trip["h2d_s"], trip["d2h_s"], trip["compute_s"]) == pytest.approx((1e-4, 1e-4, 4e-5))
    lin = one(be, op="linear", dtype="float32", n=256, way="round_trip", memory="pinned")
    assert lin["time_s"] == pytest.approx(5e-5 + 5e-5 + 5e-5)  # X in, Y back: W lives there
    assert one(be, op="matmul", dtype="float32", n=512, way="host")["time_s"] == 6.4e-3
    assert one(be, op="matmul", dtype="float32", n=512, way="gpu")["time_s"] == 2e-4
    # no float64 copies: no float64 round trip, never an estimate
    assert not ((be["dtype"] == "float64") & (be["way"] == "round_trip")).any()


def test_break_even_points_and_their_status() -> None:
    pts = tables.break_even_points(to_frame([make_run("gpubox", gpubox())]))
    mm = one(pts, op="matmul", dtype="float32", memory="pageable")
    # n=128: 1.1e-4 round trip against 1e-4 on the host; from n=256 on the GPU wins
    assert (mm["status"], mm["n_break"]) == ("from", 256)
    assert (mm["host_s"], mm["trip_s"]) == pytest.approx((8e-4, 3.4e-4))
    assert list(mm["sizes"]) == [128, 256, 512, 1024]
    pinned = one(pts, op="matmul", dtype="float32", memory="pinned")
    assert (pinned["status"], pinned["n_break"]) == ("always", 128)
    lin = one(pts, op="linear", dtype="float32", memory="pageable")
    assert (lin["status"], lin["n_break"]) == ("from", 256)
    assert lin["variant"] == "relu"


def test_never_and_mixed() -> None:
    slow = [m("matmul", "numpy", n, 1e-6) for n in (64, 128)]
    slow += [m("matmul", "torch-cuda", n, 1e-5) for n in (64, 128)]
    slow += [m(op, "torch-cuda", n, 1e-5) for op in ("h2d", "d2h") for n in (64, 128)]
    pts = tables.break_even_points(to_frame([make_run("box", slow)]))
    assert one(pts, op="matmul")["status"] == "never" and pd.isna(one(pts, op="matmul")["n_break"])
    mixed = [m("matmul", "numpy", 64, 1.0), m("matmul", "numpy", 128, 1e-9)]
    mixed += [m("matmul", "torch-cuda", n, 1e-5) for n in (64, 128)]
    mixed += [m(op, "torch-cuda", n, 1e-5) for op in ("h2d", "d2h") for n in (64, 128)]
    assert one(tables.break_even_points(to_frame([make_run("box", mixed)])),
               op="matmul")["status"] == "mixed"


def test_missing_sides_are_left_out_with_a_note() -> None:
    run = make_run("gpubox", gpubox(drop=[("d2h", "pinned", 1024), ("linear", "relu", 512)]))
    notes = tables.break_even_notes(to_frame([run]))
    assert "gpubox · matmul float32: the round trip (pinned) is left out at n=1024 (h2d or d2h " \
           "not measured there)" in notes
    assert any(n.startswith("gpubox · matmul float64: no h2d and d2h measured") for n in notes)
    be = tables.break_even(to_frame([run]))
    assert not ((be["memory"] == "pinned") & (be["n"] == 1024)).any()
    # no numpy at every core: the host side is missing, said so
    only_gpu = make_run("gpubox", [x for x in gpubox() if x.case.backend != "numpy"])
    assert any("the host line is left out" in n for n in tables.break_even_notes(to_frame([only_gpu])))
    assert set(tables.break_even_points(to_frame([only_gpu]))["status"]) == {"no common size"}
    assert render._break_even_sentences(tables.break_even_points(to_frame([only_gpu]))) == []
    # a run without a GPU has nothing to say about GPUs
    cpu = make_run("laptop", [x for x in gpubox() if x.case.backend == "numpy"], gpus=False)
    assert tables.break_even_notes(to_frame([cpu])) == []
    assert tables.break_even(to_frame([cpu]))["way"].eq("host").all()


def test_the_sentence_the_section_and_the_figure(tmp_path: Path) -> None:
    runs = [make_run("gpubox", gpubox())]
    rep = render.build_report(runs, "bench-suite report x", with_figures=True)
    sentence = ("Break-even: counting the copies to and from torch-cuda (pageable host memory), "
                "the GPU beats numpy on the host for matmul float32 from n=256; linear float32 "
                "from n=256.")
    assert render._break_even_sentences(rep.tables["break_even"]) == [sentence]
    section = next(s for s in render.sections(rep) if s.id == "break-even")
    assert section.intro == sentence and section.priority == 1
    assert any("matmul float64: no h2d and d2h" in item for item in section.items)
    assert "break_even" in [f.spec.name for f in rep.figures]
    fig = next(f for f in rep.figures if f.spec.name == "break_even")
    assert fig.png.startswith(b"\x89PNG") and fig.width_px > 300
    index = render.write_report(runs, tmp_path / "rep")
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert sentence.replace("_", "\\_") in summary or sentence in summary
    assert (tmp_path / "rep" / "figures" / "break_even.png").is_file()
    assert 'id="break-even"' in index.read_text()


def test_two_machines_get_a_sentence_each() -> None:
    other = [m("matmul", "numpy", n, NUMPY_MM[n] / 4) for n in NUMPY_MM]
    other += [m("matmul", "torch-cuda", n, CUDA_MM[n]) for n in NUMPY_MM]
    other += [m(op, "torch-cuda", n, PAGEABLE[n]) for op in ("h2d", "d2h") for n in NUMPY_MM]
    pts = tables.break_even_points(to_frame([make_run("gpubox", gpubox()), make_run("big", other)]))
    sentences = render._break_even_sentences(pts)
    assert len(sentences) == 2
    assert sentences[0].startswith("Break-even on big:")
    # numpy 4x faster there: 3.4e-4 > 2e-4 at n=256, 1.4e-3 < 1.6e-3 at n=512
    assert "matmul float32 from n=512" in sentences[0]
    assert sentences[1].startswith("Break-even on gpubox:")


def test_no_gpu_no_break_even_section_nor_figure() -> None:
    cpu = make_run("laptop", [m("matmul", "numpy", n, NUMPY_MM[n]) for n in NUMPY_MM], gpus=False)
    rep = render.build_report([cpu], with_figures=True)
    assert "break-even" not in [s.id for s in render.sections(rep)]
    assert "break_even" not in [f.spec.name for f in rep.figures]


# --- the training step's breakdown ----------------------------------------------------------


def phases(forward: float, backward: float, update: float) -> dict[str, Any]:
    return {"phases": {name: {"samples_s": [t] * 5, "number": 1, "stop": "converged"}
                       for name, t in (("forward", forward), ("backward", backward),
                                       ("update", update))}}


def test_the_training_step_breakdown() -> None:
    ms = [m("mlp_step", "numpy", 256, 1e-2, threads=1, extra=phases(3e-3, 6e-3, 1e-3)),
          m("mlp_step", "torch-cuda", 256, 1e-3, extra=phases(2e-4, 5e-4, 1e-4)),
          m("mlp_step", "torch-cpu", 256, 2e-2, threads=1)]  # phases not measured: not listed
    bd = tables.mlp_breakdown(to_frame([make_run("gpubox", ms)]))
    assert list(bd["backend"]) == ["numpy", "torch-cuda"]
    r = one(bd, backend="numpy")
    assert (r["forward_s"], r["backward_s"], r["update_s"]) == pytest.approx((3e-3, 6e-3, 1e-3))
    assert (r["forward_share"], r["backward_share"], r["update_share"]) == pytest.approx((0.3, 0.6, 0.1))
    assert r["phases_over_step"] == pytest.approx(1.0)
    assert one(bd, backend="torch-cuda")["phases_over_step"] == pytest.approx(0.8)
    rep = render.build_report([make_run("gpubox", ms)], with_figures=True)
    section = next(s for s in render.sections(rep) if s.id == "op-mlp_step")
    table = next(t for t in section.tables if t.title == "Where the training step's time goes")
    assert [c.text for c in table.rows[0]][:4] == ["numpy", "float32", "n=256", "1"]
    assert "30%" in table.rows[0][5].text and table.rows[0][-1].text == "100%"
    assert "mlp_breakdown" in [f.spec.name for f in rep.figures]
    assert tables.mlp_breakdown(to_frame([make_run("box", [ms[2]])])).empty


def test_create_on_the_device_against_on_the_host_and_copies_against_the_link() -> None:
    ms = [m("create", "torch-cuda", 1024, 1e-4), m("create", "torch-cuda", 1024, 2e-3, variant="host"),
          m("create", "numpy", 1024, 5e-3), m("h2d", "torch-cuda", 1024, PINNED[1024], variant="pinned")]
    run = make_run("gpubox", ms)
    cw = tables.create_where(to_frame([run]))
    assert list(cw["backend"]) == ["torch-cuda"]
    assert cw["ratio"].iloc[0] == pytest.approx(20.0)
    rep = render.build_report([run], with_figures=False)
    secs = {s.id: s for s in render.sections(rep)}
    assert any(t.title == "Create it where it will be used" for t in secs["op-create"].tables)
    h2d = secs["op-h2d"].tables[0]
    assert h2d.header[-1] == "torch-cuda" and "host memory" in h2d.header
    cell = h2d.rows[0][-1].text
    gbps = 1024 * 1024 * 4 / PINNED[1024] / 1e9
    assert fmt_rate(gbps, "GB/s") in cell and f"{gbps / 31.508 * 100:.0f}% of PCIe 4.0 x16" in cell


def test_new_op_figures_draw_with_several_machines(tmp_path: Path) -> None:
    frame = to_frame([make_run("gpubox", gpubox()), make_run("other", gpubox())])
    for name in ("break_even", "throughput", "speedup"):
        spec = next(s for s in figures.registered() if s.name == name)
        assert spec.make(frame) is not None
