"""NeMo's batched label-looping greedy TDT decoding (`GreedyBatchedTDTInfer`, its torch implementation on CPU) on
avalign's weights and encoder states, run in the NeMo environment that make_nemo_env.sh builds.

    benchmarks/peers/.venv-nemo/bin/python benchmarks/peers/nemo_greedy_tdt.py INPUT.pt OUTPUT.json

INPUT.pt (written by bench_greedy_decoding.py): the prediction network's and the joint head's state dicts, the
sizes, the durations, max_symbols_per_step, the projected encoder states (B, T, H), their lengths, the thread count
and the number of repeats. OUTPUT.json: per utterance the labels and the frame each was emitted at, the decoding
times (median of the repeats after a warm-up) and NeMo's version.

Weights map one to one: NeMo's embedding, LSTM and joint output layer are avalign's; NeMo's pred projection is
avalign's decoder_projector and its encoder projection is the identity (the states come projected).
"""

import json
import sys
import time

import torch


def build(inputs):
    from nemo.collections.asr.modules.rnnt import RNNTDecoder, RNNTJoint

    hidden, labels = inputs["hidden_size"], inputs["vocab_size"] - 1  # NeMo counts the labels without the blank
    decoder = RNNTDecoder(prednet=dict(pred_hidden=hidden, pred_rnn_layers=inputs["num_layers"]), vocab_size=labels,
                          blank_as_pad=True)
    joint = RNNTJoint(jointnet=dict(encoder_hidden=hidden, pred_hidden=hidden, joint_hidden=hidden,
                                    activation=inputs["activation"]),
                      num_classes=labels, num_extra_outputs=len(inputs["durations"]))
    ours = inputs["decoder"]
    with torch.no_grad():
        decoder.prediction["embed"].weight.copy_(ours["embedding.weight"])
        lstm = decoder.prediction["dec_rnn"].lstm
        for name, _ in lstm.named_parameters():
            getattr(lstm, name).copy_(ours[f"lstm.{name}"])
        joint.pred.weight.copy_(ours["decoder_projector.weight"])
        joint.pred.bias.copy_(ours["decoder_projector.bias"])
        joint.enc.weight.copy_(torch.eye(hidden))
        joint.enc.bias.zero_()
        head = joint.joint_net[-1]
        head.weight.copy_(inputs["joint"]["head.weight"])
        head.bias.copy_(inputs["joint"]["head.bias"])
    return decoder.eval(), joint.eval()


def main(input_path, output_path):
    inputs = torch.load(input_path)
    torch.set_num_threads(inputs["threads"])
    import nemo
    from nemo.collections.asr.parts.submodules.rnnt_greedy_decoding import GreedyBatchedTDTInfer

    decoder, joint = build(inputs)
    decoding = GreedyBatchedTDTInfer(decoder, joint, blank_index=inputs["vocab_size"] - 1,
                                     durations=inputs["durations"], max_symbols_per_step=inputs["max_symbols_per_step"],
                                     use_cuda_graph_decoder=False)
    states, lengths = inputs["encoder_states"].transpose(1, 2), inputs["encoder_lengths"]  # NeMo takes (B, H, T)
    decode = lambda: decoding(encoder_output=states, encoded_lengths=lengths)[0]  # noqa: E731
    hypotheses = decode()  # warm-up
    times, cpu_times = [], []
    for _ in range(inputs["repeats"]):
        started, cpu_started = time.perf_counter(), time.process_time()
        decode()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    result = dict(
        sequences=[h.y_sequence.tolist() for h in hypotheses],
        frame_timestamps=[torch.as_tensor(h.timestamp).tolist() for h in hypotheses],
        wall_s=sorted(times)[len(times) // 2], cpu_s=sorted(cpu_times)[len(times) // 2], times_s=times, nemo_version=nemo.__version__,
        torch_version=torch.__version__,
    )
    with open(output_path, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main(*sys.argv[1:3])
