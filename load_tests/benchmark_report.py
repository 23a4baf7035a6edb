"""The benchmark's report: its rows and the ratios between them, as Markdown (load_tests.benchmark writes it)."""

from __future__ import annotations


def service_cores(r: dict) -> float | None:
    """The cores serving took: the service's processes (served, baseline) or the raw pipeline's worker."""
    share = r.get("cpu") or {}
    return share.get("service_cores", share.get("ours_cores"))


def http_rows(results: dict) -> list[tuple[str, str, dict]]:
    """The rows measured over HTTP by the closed-loop client, in the report's order: (title, the runtimes pair or
    "-", the row's figures: images_per_s, p50_s, p99_s, statuses, ...)."""
    wait = results.get("served_gathered", {}).get("gather_wait_s")  # not in every run's json
    rows = [("served (HTTP)", pair, r) for pair, r in results.get("served_runtimes", {}).items()]
    rows += [(title, "-", results[name]) for name, title in (
        ("served_gathered", "served, requests gathered into one model call" + (f" ({wait * 1000:.0f} ms)" if wait is not None else "")),
        ("served_with_catalog", "served, /hello with products enrolled"),
        ("served_default_mode", "served, Ray Serve's default mode (HTTP)"),
        ("served_by_reference", "served, calls between deployments by reference (object store, not gRPC)"),
        ("baseline", "baseline (HTTP)"), ("peer", "peer: LitServe, one worker, batching 8 / 10 ms (HTTP)"),
        ("floor", "Ray Serve's floor: the graph's shape, no model work (HTTP)")) if name in results]
    return rows


def render(results: dict) -> str:
    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    def cpu(r: dict) -> str:
        share = r.get("cpu")
        if not share:
            return "-"
        return f"{share.get('service_cores', share['ours_cores'])} / {share.get('harness_cores', '-')} / {share.get('others_cores', '-')}"

    def per_cpu(r: dict) -> str:
        """Images per CPU-second of the service's processes: what the serving costs, whatever share of the CPU it got."""
        return fmt(r["images_per_s"] / service_cores(r)) if service_cores(r) else "-"

    lines = ["# Throughput benchmark", "",
             f"{results['photos']} photos ({results['phones']} full-size phone JPEGs), {results['concurrency']} requests in flight, "
             f"{results['duration_s']:.0f} s measured per figure; served and raw do what {results.get('endpoint', '/hello')} asks"
             " (/hello: what its answer reads; with an empty catalog, the whole photo alone).", "",
             "| mode | runtimes (classifier+detector) | images/s | p50 (s) | p99 (s) | answers | CPU cores used: service / "
             "load client and harness / other processes | images per CPU-second (service) |",
             "|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    for title, pair, r in http_rows(results):
        lines.append(f"| {title} | {pair} | {fmt(r['images_per_s'])} | {fmt(r['p50_s'])} | {fmt(r['p99_s'])} | {r['statuses']} "
                     f"| {cpu(r)} | {per_cpu(r)} |")
        if r.get("batches"):
            notes.append(f"- {title}, {pair}: batches formed (Serve's own metrics): {r['batches']}")
        if r.get("cpu", {}).get("cores_by_process"):
            notes.append(f"- {title}, {pair}: CPU cores by process: {r['cpu']['cores_by_process']}")
        if r.get("every_product"):
            every = r["every_product"]
            notes.append(f"- {title}, {pair}: /v1/recognize (every product) at the same load: {fmt(every['images_per_s'])} images/s, "
                         f"p99 {fmt(every['p99_s'])} s, {per_cpu(every)} images per CPU-second")
        if r.get("stage_ms"):
            notes.append(f"- {title}, {pair}: mean ms per stage of /v1/recognize at saturation (queueing included): {r['stage_ms']}")
    for pair, by_batch in results.get("raw", {}).items():
        for batch, r in by_batch.items():
            lines.append(f"| raw, batch {batch} (in process) | {pair} | {fmt(r['images_per_s'])} | - | - | ms/image {r['ms_per_image']}, "
                         f"{r.get('crops_per_image', 0):.2f} crops/image | {r['cpu']['ours_cores']} / - / - | {per_cpu(r)} |")
    lines.append("")
    served = results.get("served_runtimes", {})
    raw = results.get("raw", {})
    pairs = list(served or raw)
    if pairs:
        reference, new = pairs[0], pairs[-1]
        best = {pair: max(raw[pair].values(), key=lambda r: r["images_per_s"]) for pair in raw}

        def ratio(a: dict | None, b: dict | None, per_cpu_second: bool = False) -> str:
            if not a or not b:
                return "-"
            value = (lambda r: r["images_per_s"] / service_cores(r)) if per_cpu_second else (lambda r: r["images_per_s"])
            return fmt(value(a) / value(b))

        lines += [f"- raw {new} / raw {reference}, images per CPU-second (best batch): {ratio(best.get(new), best.get(reference), True)}",
                  f"- served / raw, {new}, images/s: {ratio(served.get(new), best.get(new))}; images per CPU-second: "
                  f"{ratio(served.get(new), best.get(new), True)}",
                  f"- served {new} / raw {reference}, images/s: {ratio(served.get(new), best.get(reference))}",
                  f"- served / baseline: {ratio(served.get(new), results.get('baseline'))}",
                  f"- served / peer (LitServe), images/s: {ratio(served.get(new), results.get('peer'))}; p99: "
                  f"{fmt(served[new]['p99_s'] / results['peer']['p99_s']) if served.get(new) and results.get('peer') else '-'}",
                  f"- served / served with requests gathered: {ratio(served.get(new), results.get('served_gathered'))}",
                  f"- served with {results.get('served_with_catalog', {}).get('products', '-')} products enrolled / served with an "
                  f"empty catalog: {ratio(results.get('served_with_catalog'), served.get(new))}",
                  f"- served / Ray Serve's floor: {ratio(served.get(new), results.get('floor'))}; peer / floor: "
                  f"{ratio(results.get('peer'), results.get('floor'))}"]
    # The serve-mode rows run after the catalog row, with its products still enrolled: they compare with it.
    same_work = results.get("served_with_catalog") or (served.get(pairs[-1]) if served else None)
    enrolled = " (products enrolled in both)" if results.get("served_with_catalog") else ""
    if results.get("served_default_mode") and same_work:
        lines.append(f"- served / served in Ray Serve's default mode{enrolled}: {ratio(same_work, results['served_default_mode'])}")
    if results.get("served_by_reference") and same_work:
        lines.append(f"- served / served with calls by reference{enrolled}: {ratio(same_work, results['served_by_reference'])}")
    lines += notes
    if results.get("sweep"):
        lines += ["", "## max_batch_size sweep (served, Detector and Classifier)", "",
                  "| max_batch_size | images/s | p50 (s) | p99 (s) | answers | mean batch formed (Detector / Classifier) "
                  "| CPU cores: service / harness / others | images per CPU-second (service) |",
                  "|---|---|---|---|---|---|---|---|"]
        for batch, r in results["sweep"].items():
            formed = " / ".join(str(r.get("batches", {}).get(d, {}).get("mean_batch", "-")) for d in ("Detector", "Classifier"))
            lines.append(f"| {batch} | {fmt(r['images_per_s'])} | {fmt(r['p50_s'])} | {fmt(r['p99_s'])} | {r['statuses']} "
                         f"| {formed} | {cpu(r)} | {per_cpu(r)} |")
    return "\n".join(lines) + "\n"

