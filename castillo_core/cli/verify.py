"""``castillo verify OUT [--repair]``: check a store end to end; repair what is bad."""

from __future__ import annotations

import json

import click


@click.command("verify")
@click.argument("out", type=click.Path())
@click.option("--repair", is_flag=True, help="Quarantine bad parts (the next run generates their prompts again).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def command(out: str, repair: bool, as_json: bool) -> None:
    """Check every part of OUT: present, unchanged (checksums), complete (N responses per prompt), no duplicates.

    Exits 1 when a problem is found (and not repaired).
    """
    from castillo_core.api.errors import StoreError
    from castillo_core.engine import integrity
    from castillo_core.engine.store import Store

    store = Store(out)
    if not (store.root / "prompts").is_dir():
        raise StoreError(f"{out} is not a castillo output (no prompts/ table)")
    if repair:
        with store.lock():
            report = integrity.repair(store, integrity.verify(store))
    else:
        report = integrity.verify(store)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": report.out,
                    "ok": report.ok,
                    "parts": report.parts,
                    "prompts": report.prompts,
                    "responses": report.responses,
                    "problems": [{"part": p.part, "problem": p.what, "repair": p.action} for p in report.problems],
                    "repaired": report.repaired,
                },
                indent=2,
            )
        )
    else:
        for problem in report.problems:
            click.echo(f"{'repaired' if repair else 'problem'}: {problem.part}: {problem.what}")
        state = "ok" if report.ok else f"{len(report.problems)} problem(s)" + (", repaired" if repair else "")
        click.echo(
            f"{report.out}: {report.parts} part(s), {report.prompts:,} prompts, {report.responses:,} responses: {state}"
        )
    if report.problems and not repair:
        raise SystemExit(1)
