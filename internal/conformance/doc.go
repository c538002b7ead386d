// Package conformance is wtool's conformance suite over ten model families
// (Llama, Qwen2, Mistral, Gemma, Phi-3, GPT-2, Mixtral, BERT, ViT, ResNet
// with BasicBlocks and Bottlenecks): its tests generate tiny checkpoints with
// the exact Hugging Face / torchvision names and config.json
// (testdata/families, PyTorch re-implementations of each family's modules),
// run wtool's operations on them and check the results against independent
// references: the families' PyTorch forward passes, numpy SVDs, PEFT's LoRA
// layer shapes, closed-form optima. The tests need /usr/bin/python3 with
// torch and numpy (internal/testenv) and skip without it.
package conformance
