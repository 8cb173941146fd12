"""A job as one flat row: the results table of the dashboard and its CSV downloads."""
from __future__ import annotations

import csv
import io

from elfscreen.app.downloads import csv_row
from elfscreen.app.schemas import ResultRow, timestamp
from elfscreen.app.store import merged_result


def result_row(row: dict, base: str) -> ResultRow:
    """The row of a store row (:func:`elfscreen.app.dashboard.queries.result_rows`, with its ``verification``);
    ``base`` builds the permalink."""
    result = merged_result(row) or {}
    tc = result.get("tc") or {}
    spread = result.get("uncertainty") or {}
    dft = result.get("dft") or {}
    verification = row.get("verification")
    return ResultRow(
        id=row["id"], batch_id=row["batch_id"], name=row["name"], status=row["status"], cached=row["cached"],
        created_at=timestamp(row["created_at"]), finished_at=timestamp(row["finished_at"]),
        formula=result.get("formula"), reduced_formula=result.get("reduced_formula"), spacegroup=result.get("spacegroup"), n_atoms=result.get("n_atoms"),
        volume_per_atom_a3=result.get("volume_per_atom_a3"),
        phi=result.get("phi"), phi_star=result.get("phi_star"), phi_1d=result.get("phi_1d"),
        phi_2d=result.get("phi_2d"), phi_dos=result.get("phi_dos"), h_fraction=result.get("h_fraction"),
        tc_k=tc.get("value_k"), tc_raw_k=tc.get("raw_k"), tc_model=tc.get("model"),
        phi_std=spread.get("phi_std"), tc_std_k=spread.get("tc_std_k"),
        warnings=result.get("warnings") or [],
        error=((row["error"] or {}).get("error") or {}).get("message"),
        verification=verification["status"] if verification else None,
        dft_phi=dft.get("phi"), dft_phi_star=dft.get("phi_star"), dft_tc_k=(dft.get("tc") or {}).get("value_k"),
        delta_phi=result.get("delta_phi"),
        permalink=f"{base}/ui/screenings/{row['id']}")


def to_csv(rows: list[ResultRow]) -> str:
    """The rows as CSV, one column per field (warnings joined with " | "), numbers unrounded, text
    cells escaped against spreadsheet formulas (:func:`~elfscreen.app.downloads.csv_cell`)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(ResultRow.model_fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = row.model_dump(mode="json")
        record["warnings"] = " | ".join(record["warnings"])
        writer.writerow(csv_row(record))
    return out.getvalue()
