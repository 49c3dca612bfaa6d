"""What bounds castillo's llama.cpp backend: three raw llama.cpp measurements, no castillo code.

1. prefill: tokens/s of one prompt-sized ``llama_decode`` (157 tokens by default), against
   the decode rate of ``S`` sequences: on a CPU format without a GEMM kernel (Q4_1) a prompt
   token costs almost as much as a generated one, which is the gap between the decode-only
   and the job ceiling of ``bench/llamacpp_batched.py``;
2. attention: the decode rate of ``S`` sequences after shared prefixes of growing length
   (the cost of the context each step attends over);
3. sampling: ``llama_sampler_sample`` (a seeded dist chain over the whole vocabulary) per
   draw, one after the other and split over two threads, after a real decode.

    python bench/llamacpp_probe.py                  # SmolLM2 Q4_1, all threads, S=16
    python bench/llamacpp_probe.py --threads 1
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llamacpp_batched import Raw, load, machine


def sampling_ms(raw: Raw, sequences: int, repeats: int = 50) -> tuple[float, float]:
    """Milliseconds per draw, serial and on two threads, over one decode's logits rows."""
    L = raw.L
    ctx = raw.context(1024, sequences)
    batch = L.llama_batch_init(max(raw.n_batch, sequences), 0, 1)
    for seq in range(sequences):
        batch.token[seq], batch.pos[seq], batch.n_seq_id[seq] = 100 + seq, 0, 1
        batch.seq_id[seq][0] = seq
        batch.logits[seq] = True
    batch.n_tokens = sequences
    if L.llama_decode(ctx, batch) != 0:
        raise SystemExit("decode failed")
    chains = []
    for seq in range(sequences):
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seq))
        chains.append(chain)

    def draw(rows: range) -> None:
        for row in rows:
            L.llama_sampler_sample(chains[row], ctx, row)

    pool = ThreadPoolExecutor(2)
    serial, threaded = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        draw(range(sequences))
        serial.append(time.perf_counter() - start)
        start = time.perf_counter()
        list(pool.map(draw, [range(0, sequences, 2), range(1, sequences, 2)]))
        threaded.append(time.perf_counter() - start)
    pool.shutdown()
    for chain in chains:
        L.llama_sampler_free(chain)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return 1000 * statistics.median(serial) / sequences, 1000 * statistics.median(threaded) / sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="alias or GGUF path (default: the bundled SmolLM2)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=157, help="prompt / prefix length in tokens")
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

    from castillo_llamacpp import _llama, models

    _llama._init_backend(verbose=False)  # llama.cpp's own log lines off, as in castillo
    threads = args.threads or _llama.default_threads()
    path = models.fetch(models.resolve(args.model), None)
    raw = Raw(path, threads, 512)
    print(f"model {path.name}, {threads} threads, {args.sequences} sequences; machine: {machine()}")
    print(f"load average before: {load()}")
    prompt = [100 + i % 1000 for i in range(args.prompt)]
    prefill = len(prompt) / raw.prefill_seconds([prompt] * 5) * 5
    decode = raw.decode_rate(args.sequences, prompt, args.steps)
    print(
        f"1. prefill {prefill:.1f} tok/s ({args.prompt}-token prompts); decode {decode:.1f} tok/s "
        f"({args.sequences} sequences): a prompt token costs {decode / prefill:.2f} generated tokens"
    )
    rates = []
    for length in (args.prompt, 700, 1400, 2200):
        rates.append(raw.decode_rate(args.sequences, [100 + i % 1000 for i in range(length)], args.steps))
        print(f"2. decode after a {length}-token prefix: {rates[-1]:.1f} tok/s", flush=True)
    serial, threaded = sampling_ms(raw, args.sequences)
    print(
        f"3. sampling: {serial:.3f} ms per draw one after the other, {threaded:.3f} ms split over 2 threads "
        f"(with no decode running beside it); {100 * serial * decode / 1000:.1f}% of a decode-bound run"
    )
    print(f"load average after: {load()}")
    raw.close()
    print(
        f"RESULT llamacpp_probe prefill {prefill:.0f} tok/s vs decode {decode:.0f} tok/s at {args.sequences} "
        f"sequences; sampling {serial:.2f} ms per draw"
    )


if __name__ == "__main__":
    sys.exit(main())
