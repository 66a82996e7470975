"""Max |pipe(GPU) - pipe(CPU)| and |pipe(GPU) - Hugging Face BertModel (GPU, fp32)| for one sentence.

Usage: parity.py MODEL_DIR TEXT PIPE_CPU_JSON PIPE_GPU_JSON (the outputs of `pipe encode --json`)
"""
import json, sys
import torch, transformers
model_dir, text, cpu_path, cuda_path = sys.argv[1:5]
device = "cuda" if torch.cuda.is_available() else "cpu"
cpu = json.load(open(cpu_path)); cuda = json.load(open(cuda_path))
assert cpu["tokens"] == cuda["tokens"], (cpu["tokens"], cuda["tokens"])
a = torch.tensor(cpu["last_hidden_state"]); b = torch.tensor(cuda["last_hidden_state"])
print(f"tokens {len(cuda['tokens'])}; max |pipe GPU - pipe CPU| = {(a - b).abs().max().item():.2e}")
tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
model = transformers.BertModel.from_pretrained(model_dir, add_pooling_layer=False, dtype=torch.float32,
                                               attn_implementation="eager").to(device).eval()
enc = tok(text, return_tensors="pt").to(device)
print("HF tokens equal:", tok.convert_ids_to_tokens(enc["input_ids"][0]) == cuda["tokens"])
with torch.no_grad():
    h = model(**enc).last_hidden_state[0].float().cpu()
print(f"max |pipe GPU - HF torch {device}| = {(h - b).abs().max().item():.2e}; "
      f"max |pipe CPU - HF torch {device}| = {(h - a).abs().max().item():.2e}")
