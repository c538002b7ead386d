// Package nn is wtool's built-in forward engine for the architectures
// io/arch describes: torchvision's ResNet (BasicBlock and Bottleneck,
// BatchNorm in eval and training mode), ViT, BERT, GPT-2 and the Llama
// family of decoders (Llama, Qwen2, Mistral, Gemma, Phi-3, Mixtral). It runs checkpoints in float32 on the CPU (convolutions as
// im2col and the project's GEMM, tensors/linalg), driven by what io/arch
// says every weight is, and gives what merging needs without leaving Go:
//
//   - Evaluate: a classifier's accuracy and cross-entropy on labelled
//     images, a causal language model's perplexity on token sequences;
//   - RecomputeBatchNorm: a (merged) network's BatchNorm running statistics
//     recomputed by running data through it in training mode, exactly as
//     PyTorch does (the cumulative average of momentum=None by default);
//   - CollectStats: single or joint statistics (docs/stats.md) of every
//     module input (Linear and Conv1D inputs, convolutions' unfolded
//     patches) and of the activation points permutation matching and PLeaS
//     need (the residual stream at every block boundary, a ResNet stage's
//     channels after every block, a block's hidden channels), named as
//     tools/wtool_collect.py names them, so that the two agree.
//
// A Net holds the whole model in float32 memory: the engine is for the
// small and mid-sized models merges are evaluated on (a ResNet-18 is 45 MB),
// not for running 8B-parameter LLMs. Every pass is cancellable between
// batches and between blocks.
package nn
