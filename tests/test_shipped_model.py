"""The shipped checkpoints' science: φ and ELF against DFT on held-out grids, within the model cards' figures
(the pure-H ``elf-h.pt`` first; ``elf-mh.pt``, the species-aware default since 0.12.0, at the end).

Every other test runs an untrained model; this one loads ``model/weights/elf-h.pt`` and predicts the ELF
on exactly the DFT grids of structures it never trained on (``data/crystal-test``: all 29 cubic and
hexagonal crystals; ``data/fluid-md``: 10 MD snapshots of dense fluid H), then compares with the figures
``model/weights/MODEL_CARD.md`` publishes, read from the card itself, and checks the calibrated σ's
promise: ≥ 90 % within 2σ. A swapped, retrained-for-worse,
truncated or untrained checkpoint fails here (an untrained ensemble gives φ MAE ≈ 0.20 and ELF MAE ≈ 0.26).

The card's "all" row covers 67 held-out structures, 29 of them ``crystal-test``; on that subset the
shipped model scores φ MAE 0.031, ELF MAE 0.0236 and identity R² median 0.988. The margins below
(φ MAE +0.005, ELF MAE +10 %, R² −0.005) allow a subset to be a little harder than the whole, and are
far below what any real regression moves.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from elfscreen.model.calibration import row_sigma
from elfscreen.model.evaluate import evaluate_entry
from elfscreen.model.pipeline import DEFAULT_MODEL, WEIGHTS_DIR, load_model, model_path
from elfscreen.model.train import load_entries

DATA = Path(__file__).resolve().parents[1] / "data"
CARD = WEIGHTS_DIR / "MODEL_CARD.md"
PHI_MAE_MARGIN = 0.005
ELF_MAE_FACTOR = 1.10
R2_MARGIN = 0.005


def card_row(group: str) -> dict:
    """The card's metrics table row of ``group`` ("all", "fluid", "cubic", …) as numbers."""
    for line in CARD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == group and len(cells) == 9:
            keys = ("structures", "elf_mae", "elf_rmse", "r2_identity", "r2_correlated", "phi_mae", "phi_bias", "phi_r2")
            return dict(zip(keys, map(float, cells[1:])))
    raise AssertionError(f"{CARD}: no metrics row for {group!r}")


def card_largest_phi_error() -> float:
    """The largest |φ_ML − φ_DFT| the card lists among its failure cases."""
    pairs = re.findall(r"φ_ML ([0-9.]+) vs φ_DFT ([0-9.]+)", CARD.read_text())
    assert pairs, f"{CARD}: no 'φ_ML … vs φ_DFT …' failure cases listed"
    return max(abs(float(a) - float(b)) for a, b in pairs)


@pytest.fixture(scope="module")
def shipped():
    """The shipped checkpoint, on one torch thread: on a loaded CI machine torch's thread pool spins
    against the other processes (35 s → 280 s measured on 2 busy cores); one thread keeps this < 60 s."""
    model = load_model("elf-h")
    version = re.search(r"`elf-h\.pt` — (\S+)", CARD.read_text()).group(1)
    assert model.model_version == version, f"the shipped checkpoint is {model.model_version}, the card describes {version}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model
    torch.set_num_threads(threads)


def rows(model, folder: str, every: int = 1) -> list[dict]:
    """evaluate_entry's metrics for every ``every``-th structure of ``DATA/folder`` (sorted by id)."""
    entries, _ = load_entries([DATA / folder])
    entries = sorted(entries, key=lambda e: e.id)[::every]
    assert entries, f"{DATA / folder} holds no DFT grids"
    trained_on = set(model.meta["splits"]["train"])
    assert not trained_on & {e.id for e in entries}, "these grids must be held out"
    return [evaluate_entry(model, e)[0] for e in entries]


def phi_errors(rows: list[dict]) -> np.ndarray:
    assert all(r["phi_ml"] is not None and r["phi_dft"] is not None for r in rows), [r["id"] for r in rows if r["phi_ml"] is None]
    return np.array([abs(r["phi_ml"] - r["phi_dft"]) for r in rows])


def within_2sigma(model, rows: list[dict]) -> float:
    """Share of ``rows`` whose |φ_ML − φ_DFT| is within twice the calibrated σ a screening result carries."""
    return float(np.mean([abs(r["phi_ml"] - r["phi_dft"]) <= 2 * row_sigma(r, model.meta["calibration"]) for r in rows]))


def test_held_out_crystals_match_the_model_card(shipped):
    card, largest = card_row("all"), card_largest_phi_error()
    got = rows(shipped, "crystal-test")
    err = phi_errors(got)
    worst = got[int(err.argmax())]["id"]
    assert err.max() <= largest, f"{worst}: |Δφ| {err.max():.3f} above the card's largest error {largest:.3f}"
    assert err.mean() <= card["phi_mae"] + PHI_MAE_MARGIN, f"φ MAE {err.mean():.4f} vs the card's {card['phi_mae']}"
    elf_mae = np.mean([r["mae"] for r in got])
    assert elf_mae <= card["elf_mae"] * ELF_MAE_FACTOR, f"ELF MAE {elf_mae:.4f} vs the card's {card['elf_mae']}"
    r2 = np.median([r["r2_identity"] for r in got])
    assert r2 >= card["r2_identity"] - R2_MARGIN, f"identity R² median {r2:.4f} vs the card's {card['r2_identity']}"
    assert within_2sigma(shipped, got) >= 0.9  # the calibration's promise (28 of 29 here)


def test_held_out_fluid_snapshots_match_the_model_card(shipped):
    """Every second MD fluid snapshot (10, all three pressures; never trained on): each φ within the
    card's largest error, the ELF as good as the card's fluid group (ELF MAE 0.0304 here). φ MAE here is
    0.046, above the card's 3-cell fluid figure: the model puts the fluid's threshold too high
    (docs/REPRODUCTION.md), so it is bounded per snapshot, not on average."""
    card, largest = card_row("fluid"), card_largest_phi_error()
    got = rows(shipped, "fluid-md", every=2)
    err = phi_errors(got)
    assert err.max() <= largest, f"{got[int(err.argmax())]['id']}: |Δφ| {err.max():.3f} above the card's largest {largest:.3f}"
    elf_mae = np.mean([r["mae"] for r in got])
    assert elf_mae <= card["elf_mae"] * ELF_MAE_FACTOR, f"ELF MAE {elf_mae:.4f} vs the card's fluid {card['elf_mae']}"
    r2 = np.median([r["r2_identity"] for r in got])
    assert r2 >= card["r2_identity"] - R2_MARGIN, f"identity R² median {r2:.4f} vs the card's fluid {card['r2_identity']}"
    assert within_2sigma(shipped, got) >= 0.9  # the calibration's promise (9 of these 10)


# ---------------------------------------------------------------------------------------------------
# elf-mh (the species-aware preview, MODEL_CARD-elf-mh.md)
# ---------------------------------------------------------------------------------------------------

MH_CARD = WEIGHTS_DIR / "MODEL_CARD-elf-mh.md"


def mh_card_row(group_prefix: str) -> dict:
    """The elf-mh card's held-out table row whose group starts with ``group_prefix``, as numbers."""
    for line in MH_CARD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith(group_prefix) and len(cells) == 8:
            keys = ("structures", "phi_mae", "phi_worst", "phi_bias", "phi_r2", "elf_mae", "coverage")
            return dict(zip(keys, (float(c.rstrip("%")) / (100 if c.endswith("%") else 1) for c in cells[1:])))
    raise AssertionError(f"{MH_CARD}: no held-out row starting {group_prefix!r}")


def test_every_shipped_checkpoint_matches_the_weights_manifest():
    import hashlib
    import json

    manifest = json.loads((WEIGHTS_DIR / "MANIFEST.json").read_text())
    assert set(manifest) == {p.name for p in WEIGHTS_DIR.glob("*.pt")}
    for name, entry in manifest.items():
        data = (WEIGHTS_DIR / name).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert torch.load(WEIGHTS_DIR / name, weights_only=True)["model_version"] == entry["model_version"], name


def test_a_shipped_model_is_picked_by_name_and_elf_mh_is_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("ELFSCREEN_MODEL", raising=False)
    assert DEFAULT_MODEL == "elf-mh.pt" and model_path() == WEIGHTS_DIR / "elf-mh.pt"
    assert model_path("elf-h") == WEIGHTS_DIR / "elf-h.pt"
    assert model_path("elf-mh") == model_path("elf-mh.pt") == WEIGHTS_DIR / "elf-mh.pt"
    monkeypatch.setenv("ELFSCREEN_MODEL", "elf-mh")
    assert model_path() == WEIGHTS_DIR / "elf-mh.pt"
    monkeypatch.chdir(tmp_path)  # a file of that name in the working directory wins over the shipped one
    (tmp_path / "elf-mh").write_bytes(b"")
    assert model_path("elf-mh") == Path("elf-mh")


def test_elf_mh_on_held_out_hydrides_matches_its_model_card():
    """The hydride grids held out by construction that the card lists (hydride-test: random hydrides of
    another seed; hydride-lpo: the MH9 family never trained on): φ MAE, worst miss, ELF MAE and the 2σ
    coverage of the calibrated σ as the card states them. An untrained or pure-H checkpoint fails (the
    latter refuses the metals)."""
    model = load_model("elf-mh")
    version = re.search(r"`elf-mh\.pt` — (\S+)", MH_CARD.read_text()).group(1)
    assert model.model_version == version
    ids = set(re.findall(r"hydride-(?:prototype|random)-s\d-\d{6}", MH_CARD.read_text().split("test_shipped_model.py` evaluates")[1].split("\n\n")[0]))
    card = mh_card_row("hydride-test + hydride-lpo")
    assert len(ids) == card["structures"]
    entries, _ = load_entries([DATA / "hydride-test", DATA / "hydride-lpo"])
    entries = [e for e in entries if e.id in ids]
    assert len(entries) == len(ids) and not ids & set(model.meta["splits"]["train"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = [evaluate_entry(model, e)[0] for e in entries]
    finally:
        torch.set_num_threads(threads)
    err = phi_errors(got)
    assert err.max() <= card["phi_worst"] + PHI_MAE_MARGIN, f"worst |Δφ| {err.max():.3f} vs the card's {card['phi_worst']}"
    assert err.mean() <= card["phi_mae"] + PHI_MAE_MARGIN, f"φ MAE {err.mean():.4f} vs the card's {card['phi_mae']}"
    assert np.mean([r["mae"] for r in got]) <= card["elf_mae"] * ELF_MAE_FACTOR
    assert within_2sigma(model, got) >= card["coverage"] - 0.005  # the card rounds to whole percent


def test_elf_mh_on_held_out_pure_h_crystals_matches_its_model_card():
    """The default model on pure hydrogen: all 29 ``crystal-test`` crystals (never trained on) within the
    elf-mh card's crystal-test row (φ MAE, worst miss, ELF MAE, 2σ coverage)."""
    model = load_model("elf-mh")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = rows(model, "crystal-test")
    finally:
        torch.set_num_threads(threads)
    card = mh_card_row("crystal-test")
    assert len(got) == card["structures"]
    err = phi_errors(got)
    assert err.max() <= card["phi_worst"] + PHI_MAE_MARGIN, f"worst |Δφ| {err.max():.3f} vs the card's {card['phi_worst']}"
    assert err.mean() <= card["phi_mae"] + PHI_MAE_MARGIN, f"φ MAE {err.mean():.4f} vs the card's {card['phi_mae']}"
    assert np.mean([r["mae"] for r in got]) <= card["elf_mae"] * ELF_MAE_FACTOR
    assert within_2sigma(model, got) >= card["coverage"] - 0.005  # the card rounds to whole percent


def test_elf_mh_flags_a_metal_closer_to_an_h_than_any_training_cell():
    """LaH10 written with its 32f H at x = 0.118 around La at 4a (La–H 1.04 Å, the Wyckoff x of the other
    origin choice) gets the shipped checkpoint's La–H warning and a widened σ; the real LaH10 (x = 0.38)
    gets neither. Needs ``training_range.min_xh_a`` in the shipped checkpoint (elf-mh-0.4 on)."""
    from elfscreen.model.pipeline import screen_structure
    from reference import lah10

    model = load_model("elf-mh")
    results = {x: screen_structure(lah10(x), f"LaH10 x={x}", model, spacing_a=0.3) for x in (0.38, 0.118)}
    flag = [w for w in results[0.118].warnings if w.startswith("La–H distance 1.042 Å is shorter than any")]
    assert flag and flag[0].endswith("uncertainties widened ×2"), results[0.118].warnings
    assert not [w for w in results[0.38].warnings if "–H distance" in w], results[0.38].warnings
