"""Tc relations against the values printed in the networking-value note and the reference README."""
import pytest

from elfscreen.model.tc import TC_MODELS, estimate_tc


@pytest.mark.parametrize("phi, expected", [(0.23, 87.5), (0.59, 357.5), (0.64, 395.0), (0.13, 12.5)])
def test_belli_pure_hydrogen(phi, expected):
    tc = estimate_tc(phi, h_fraction=1.0)
    assert tc.value_k == pytest.approx(expected) and tc.raw_k == pytest.approx(expected)
    assert tc.h_dos == 1.0 and not tc.h_dos_assumed and tc.note is None


def test_negative_tc_is_zero_with_raw_kept():
    tc = estimate_tc(0.08, 1.0)
    assert tc.value_k == 0.0 and tc.raw_k == pytest.approx(-25.0)


def test_compound_with_hdos_matches_reference_readme():
    # shared/reference README: Belli's relation gives 229.3 K (VASP CaYH20) and 288.5 K (QE CaYH18)
    assert estimate_tc(0.55, 20 / 22, 0.589).value_k == pytest.approx(229.3, abs=0.1)
    assert estimate_tc(0.60, 18 / 20, 0.784).value_k == pytest.approx(288.5, abs=0.1)


def test_compound_without_hdos_assumes_one_and_says_so():
    tc = estimate_tc(0.55, 20 / 22)
    assert tc.h_dos == 1.0 and tc.h_dos_assumed and "upper bound" in tc.note
    assert tc.value_k > estimate_tc(0.55, 20 / 22, 0.589).value_k


def test_tcestime_formulas():
    phi, phi_star, hf, hd = 0.55, 0.72, 20 / 22, 0.589
    phi_dos = phi * hf * hd ** (1 / 3)
    assert estimate_tc(phi, hf, hd, "leastsq").raw_k == pytest.approx(456.34 * phi_dos - 9.46)
    assert estimate_tc(phi, hf, hd, "sr4").raw_k == pytest.approx(574.7 * phi * (hd * hf**3) ** 0.5)
    assert estimate_tc(phi, hf, hd, "sr2", phi_star).raw_k == pytest.approx(442.3 * (1 - (phi_star - phi)) * hf**3 * hd**0.5)
    sr5 = 422.2 * 6.75 * (phi_star**2 - phi_star**3) * hf**3 * (phi * hd) ** (1 / 3) + 5.5
    assert estimate_tc(phi, hf, hd, "sr5", phi_star).raw_k == pytest.approx(sr5)
    assert set(TC_MODELS) == {"belli2021", "leastsq", "sr2", "sr4", "sr5"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown Tc model"):
        estimate_tc(0.5, 1.0, model="nope")
    with pytest.raises(ValueError, match="H_DOS"):
        estimate_tc(0.5, 1.0, h_dos=1.5)
    assert estimate_tc(None, 1.0).value_k is None
    assert estimate_tc(0.5, 1.0, model="sr2").value_k is None  # needs φ*
