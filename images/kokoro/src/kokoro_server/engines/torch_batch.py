"""Several Kokoro inputs in one forward pass of KModel, each item as if it ran alone.

KModel.forward_with_tokens takes one input. Padding a batch naively changes every
shorter item's audio: the bidirectional LSTMs would read the padding, the decoder's
AdaIN layers would normalise over the padded time axis, and every convolution would
read the padding where a lone item's convolution reads its zero padding. So here the
LSTMs get packed sequences, every AdaIN1d normalises over its item's own frames, and
every convolution of the decoder and the F0/energy heads sees zeros past its item's
end. What is left differs from a lone run only at the very end of each item (the
vocoder's STFT pads by reflection, its sine source interpolates across the end) and in
the vocoder's random phase noise, which differs between any two runs anyway.
"""
from __future__ import annotations

import threading

import torch
from kokoro.istftnet import AdaIN1d, TorchSTFT
from torch import nn

_frames = threading.local()  # per worker thread: (valid frames per item, padded frames)


def _mask(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """[B, 1, L] mask of each item's own positions and their count, or None outside
    a batch. Every tensor the decoder makes is `k * F` or `k * F + 1` long for F padded
    frames (it upsamples by whole factors), so an item of f frames owns the first
    `L - (F - f) * (L // F)` positions of a tensor of length L."""
    ctx = getattr(_frames, "ctx", None)
    if ctx is None:
        return None
    frames, padded = ctx
    length = x.shape[-1]
    valid = length - (padded - frames) * (length // padded)
    mask = torch.arange(length, device=x.device)[None, :] < valid[:, None]
    return mask.unsqueeze(1).to(x.dtype), valid


class MaskedAdaIN1d(AdaIN1d):
    def forward(self, x, s):
        masked = _mask(x)
        if masked is None:
            return super().forward(x, s)
        mask, valid = masked
        n = valid.to(x.dtype).view(-1, 1, 1)
        mean = (x * mask).sum(-1, keepdim=True) / n
        var = (((x - mean) * mask) ** 2).sum(-1, keepdim=True) / n
        norm = self.norm
        y = (x - mean) * torch.rsqrt(var + norm.eps)
        if norm.affine:
            y = y * norm.weight.view(1, -1, 1) + norm.bias.view(1, -1, 1)
        gamma, beta = torch.chunk(self.fc(s).unsqueeze(-1), chunks=2, dim=1)
        return ((1 + gamma) * y + beta) * mask


class _ZeroPastEnd:
    def forward(self, x, *args):
        masked = _mask(x)
        return super().forward(x if masked is None else x * masked[0], *args)


class MaskedConv1d(_ZeroPastEnd, nn.Conv1d):
    pass


class MaskedConvTranspose1d(_ZeroPastEnd, nn.ConvTranspose1d):
    pass


class MaskedTorchSTFT(TorchSTFT):
    def inverse(self, magnitude, phase):
        masked = _mask(magnitude)
        return super().inverse(magnitude if masked is None else magnitude * masked[0], phase)


_SWAPS = {AdaIN1d: MaskedAdaIN1d, nn.Conv1d: MaskedConv1d,
          nn.ConvTranspose1d: MaskedConvTranspose1d, TorchSTFT: MaskedTorchSTFT}


def enable(model: nn.Module) -> None:
    """Give the frame-rate parts of the model (decoder, F0 and energy heads) their
    masked kinds, same weights; outside `forward_batch` they behave as before."""
    predictor = model.predictor
    for part in (model.decoder, predictor.F0, predictor.N, predictor.F0_proj, predictor.N_proj):
        for module in part.modules():
            swap = _SWAPS.get(type(module))
            if swap is not None:
                module.__class__ = swap


def _packed_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                               enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


def _f0n(predictor, en: torch.Tensor, s: torch.Tensor, frames: torch.Tensor):
    """ProsodyPredictor.F0Ntrain with its shared LSTM packed to each item's frames."""
    x = _packed_lstm(predictor.shared, en.transpose(-1, -2), frames).transpose(-1, -2)
    f0, n = x, x
    for block in predictor.F0:
        f0 = block(f0, s)
    for block in predictor.N:
        n = block(n, s)
    return predictor.F0_proj(f0).squeeze(1), predictor.N_proj(n).squeeze(1)


@torch.inference_mode()
def forward_batch(model, ids: list[list[int]], ref_s: torch.Tensor,
                  speeds: list[float]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """ids: token ids per item, pad tokens included; ref_s: [B, 256] styles.
    Returns (audio, frames per token) per item, on the model's device."""
    device = ref_s.device
    batch = len(ids)
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    tokens = int(lengths.max())
    input_ids = torch.zeros((batch, tokens), dtype=torch.long)
    for b, row in enumerate(ids):
        input_ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
    input_ids = input_ids.to(device)
    text_mask = (torch.arange(tokens)[None, :] >= lengths[:, None]).to(device)

    bert_dur = model.bert(input_ids, attention_mask=(~text_mask).int())
    d_en = model.bert_encoder(bert_dur).transpose(-1, -2)
    s = ref_s[:, 128:]
    d = model.predictor.text_encoder(d_en, s, lengths, text_mask)
    x = _packed_lstm(model.predictor.lstm, d, lengths)
    duration = torch.sigmoid(model.predictor.duration_proj(x)).sum(dim=-1)
    duration = duration / torch.tensor(speeds, device=device, dtype=duration.dtype)[:, None]
    pred_dur = torch.round(duration).clamp(min=1).long().masked_fill(text_mask, 0)

    dur_cpu = pred_dur.cpu()
    frames_cpu = dur_cpu.sum(dim=1)
    padded = int(frames_cpu.max())
    aln = torch.zeros((batch, tokens, padded), device=device)
    for b in range(batch):
        n = int(lengths[b])
        token_of_frame = torch.repeat_interleave(torch.arange(n), dur_cpu[b, :n]).to(device)
        aln[b, token_of_frame, torch.arange(int(frames_cpu[b]), device=device)] = 1
    frames = frames_cpu.to(device)

    _frames.ctx = (frames, padded)
    try:
        en = d.transpose(-1, -2) @ aln
        f0, n = _f0n(model.predictor, en, s, frames)
        # Nothing past an item's end may reach the sine source of the vocoder.
        f0_mask = _mask(f0.unsqueeze(1))[0].squeeze(1)
        f0, n = f0 * f0_mask, n * f0_mask
        t_en = model.text_encoder(input_ids, lengths, text_mask)
        asr = t_en @ aln
        audio = model.decoder(asr, f0, n, ref_s[:, :128])
    finally:
        _frames.ctx = None
    audio = audio.reshape(batch, -1)
    samples = audio.shape[-1] // padded
    return [(audio[b, :int(frames_cpu[b]) * samples], dur_cpu[b, :int(lengths[b])])
            for b in range(batch)]
