"""PyTorch reference for `pipe bench train`: the same MiniLM classifier step as pipe's.

BERT encoder + the `cls` head (dropout 0.1, linear on the [CLS] state), cross-entropy,
backward, global-norm clipping at 1.0 and AdamW (lr 2e-5, weight decay 0.01, eps 1e-6);
inference is one forward pass in eval mode. Prints one JSON object per shape on stdout.

Usage: python bench_train_torch.py CONFIG_JSON_OR_MODEL_DIR SHAPES WARMUP STEPS LABELS [DEVICE [AMP]]
  SHAPES: comma-separated BATCHxSEQ, e.g. 32x128,32x64
  DEVICE: cpu (default) or cuda:N; on a GPU each timing waits for the device to finish
  AMP: none (default), bfloat16 or float16: also time the step and the inference pass with
       automatic mixed precision (torch.autocast; float16 with a GradScaler), as PyTorch's
       AMP recipe does it, from the same weights
"""
import contextlib
import json
import os
import statistics
import sys
import time

import torch
import transformers


def build_encoder(source):
    if os.path.isdir(source):
        return transformers.BertModel.from_pretrained(source, add_pooling_layer=False)
    config = transformers.BertConfig(**json.loads(source))
    return transformers.BertModel(config, add_pooling_layer=False)


def median(xs):
    return statistics.median(xs)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    source, shapes, warmup, steps, labels = sys.argv[1:6]
    warmup, steps, labels = int(warmup), int(steps), int(labels)
    device = torch.device(sys.argv[6] if len(sys.argv) > 6 else "cpu")
    amp_name = sys.argv[7] if len(sys.argv) > 7 else "none"
    amp = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[amp_name]
    torch.manual_seed(0)
    encoder = build_encoder(source).to(device)
    hidden = encoder.config.hidden_size
    vocab = encoder.config.vocab_size
    head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(hidden, labels)).to(device)
    params = list(encoder.named_parameters()) + list(head.named_parameters())
    decay = [p for n, p in params if p.dim() > 1]
    no_decay = [p for n, p in params if p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=2e-5,
        eps=1e-6,
    )
    for shape in shapes.split(","):
        batch, seq_len = (int(v) for v in shape.split("x"))
        low = 1000 if vocab > 2000 else 1
        ids = torch.randint(low, vocab, (batch, seq_len)).to(device)
        mask = torch.ones(batch, seq_len, dtype=torch.long).to(device)
        gold = torch.randint(0, labels, (batch,)).to(device)

        def time_steps(amp):
            """Median seconds of a training step and of an inference pass, under `amp`."""
            context = (
                (lambda: torch.autocast(device_type=device.type, dtype=amp))
                if amp is not None
                else contextlib.nullcontext
            )
            scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
            encoder.train()
            head.train()
            train_times = []
            for step in range(warmup + steps):
                start = time.perf_counter()
                with context():
                    h = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                    logits = head(h[:, 0])
                    loss = torch.nn.functional.cross_entropy(logits, gold)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
                scaler.step(optimizer)
                scaler.update()
                loss.item()
                synchronize(device)
                if step >= warmup:
                    train_times.append(time.perf_counter() - start)

            encoder.eval()
            head.eval()
            infer_times = []
            with torch.inference_mode():
                for step in range(warmup + steps):
                    start = time.perf_counter()
                    with context():
                        h = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                        head(h[:, 0]).argmax(1).cpu()
                    synchronize(device)
                    if step >= warmup:
                        infer_times.append(time.perf_counter() - start)
            return median(train_times), median(infer_times)

        train_s, infer_s = time_steps(None)
        amp_train_s, amp_infer_s = time_steps(amp) if amp is not None else (None, None)
        print(
            json.dumps(
                {
                    "batch": batch,
                    "seq_len": seq_len,
                    "train_s_per_step": train_s,
                    "train_seq_per_s": batch / train_s,
                    "infer_s_per_step": infer_s,
                    "infer_seq_per_s": batch / infer_s,
                    "amp_train_s_per_step": amp_train_s,
                    "amp_infer_s_per_step": amp_infer_s,
                    "amp_dtype": str(amp) if amp is not None else None,
                    "torch_version": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "device": str(device),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
