// The "conformer" encoder plugin: a frontend followed by N Conformer blocks.
//   frontend = subsampling: Conv2D 4x subsampling of log-mel frames, the speech encoder of SLAM/mSLAM
//     (mSLAM figure 1; w2v-BERT section 3.1).
//   frontend = projection: one Linear(input_dim, D) at the input's frame rate, the shared encoder of
//     SLAM/mSLAM, whose input is the speech encoder's output (BuildContext::input_dim = its D) and whose
//     embed() is the figure's "linear projection into the shared encoder".
#include <cmath>
#include <limits>

#include <torch/nn/modules/container/modulelist.h>

#include "activation_checkpoint.h"
#include "conformer_block.h"
#include "dropout.h"
#include "subsampling.h"
#include "workbench/encoder.h"
#include "workbench/error.h"
#include "workbench/plugin.h"

namespace workbench::conformer {
namespace {

struct ConformerImpl : torch::nn::Module {
  /// `channels` = 0 selects the projection frontend.
  ConformerImpl(std::int64_t input_dim, std::int64_t channels, std::int64_t layers, const BlockOptions& o)
      : dropout(o.dropout()) {
    if (channels > 0)
      subsampling = register_module("subsampling", Subsampling(input_dim, channels, o.d_model()));
    else
      projection = register_module("projection", torch::nn::Linear(input_dim, o.d_model()));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (std::int64_t i = 0; i < layers; ++i) blocks->push_back(Block(o));
  }
  Subsampling subsampling{nullptr};
  torch::nn::Linear projection{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  double dropout;
};
TORCH_MODULE(Conformer);

class ConformerEncoder final : public Encoder {
 public:
  ConformerEncoder(const Options& opt, const BuildContext& ctx) {
    if (ctx.input_dim <= 0) throw std::invalid_argument("the conformer needs the input feature dimension");
    BlockOptions o;
    o.d_model(opt.get_int("d_model"))
        .ffn_dim(opt.get_int("ffn_dim"))
        .heads(opt.get_int("heads"))
        .kernel_size(opt.get_int("kernel_size"))
        .conv_norm(opt.get_string("conv_norm"))
        .conv_norm_groups(opt.get_int("conv_norm_groups"))
        .batch_norm_momentum(opt.get_float("batch_norm_momentum"))
        .dropout(opt.get_float("dropout"))
        .position(opt.get_string("position"))
        .shaw_left(opt.get_int("shaw_left"))
        .shaw_right(opt.get_int("shaw_right"))
        .linear_backend(parse_linear_backend(opt.get_string("linear_backend")));
    if (o.d_model() % o.heads() != 0)
      opt.fail("heads", "d_model (" + std::to_string(o.d_model()) + ") must be divisible by heads");
    if (o.kernel_size() % 2 == 0) opt.fail("kernel_size", "must be odd so that the output keeps its length");
    if (o.conv_norm() == "group" && o.d_model() % o.conv_norm_groups() != 0)
      opt.fail("conv_norm_groups", "d_model must be divisible by it");
    const auto& position = o.position();
    if (position != "none" && position != "relative_xl" && position != "shaw")
      opt.fail("position", "must be none, relative_xl or shaw (got '" + position + "')");
    if (position == "shaw") {
      if (o.shaw_left() < 0) opt.fail("shaw_left", "must be >= 0 (a distance to the left, in frames)");
      if (o.shaw_right() < 0) opt.fail("shaw_right", "must be >= 0 (a distance to the right, in frames)");
      if (o.shaw_left() + o.shaw_right() == 0)
        opt.fail("shaw_right", "shaw_left = shaw_right = 0 gives every key the same positional score, which "
                               "softmax cancels; widen the window or use position = none");
    }
    const auto& frontend = opt.get_string("frontend");
    if (frontend != "subsampling" && frontend != "projection")
      opt.fail("frontend", "must be subsampling or projection (got '" + frontend + "')");
    subsampling_ = frontend == "subsampling";
    if (subsampling_ && ctx.input_dim < SubsamplingImpl::kMinFrames)
      throw ConfigError("the conformer's subsampling needs at least 7 input features per frame");
    d_model_ = o.d_model();
    std::int64_t channels = 0;
    if (subsampling_) {
      channels = opt.get_int("subsampling_channels");
      if (channels == 0) channels = d_model_;
    }
    input_dropout_ = o.dropout();
    checkpoint_activations_ = opt.get_bool("checkpoint_activations");
    net_ = Conformer(ctx.input_dim, channels, opt.get_int("layers"), o);
  }

  torch::nn::Module& module() override { return *net_; }
  std::int64_t output_dim() const override { return d_model_; }

  EncoderOutput embed(const torch::Tensor& features, const torch::Tensor& lengths) override {
    if (!subsampling_) return {drop_input(net_->projection(features)), lengths};
    // A batch of clips shorter than the subsampling's receptive field would fail inside Conv2d; pad it
    // so that those rows come out with length 0 (CTC then counts them as 0 with zero_infinity).
    auto padded = features;
    if (features.size(1) < SubsamplingImpl::kMinFrames)
      padded = torch::constant_pad_nd(features, {0, 0, 0, SubsamplingImpl::kMinFrames - features.size(1)});
    auto x = net_->subsampling(padded);
    auto out_lengths = torch::clamp(SubsamplingImpl::output_lengths(lengths), 0, x.size(1));
    return {drop_input(x), out_lengths};
  }

  EncoderOutput encode(const EncoderOutput& in) override {
    const auto B = in.x.size(0), T = in.x.size(1);
    auto pad = padding_mask(in.lengths, T);  // (B, T)
    const auto heads = net_->blocks->size() ? net_->blocks->ptr<BlockImpl>(0)->attention->heads : 1;
    // One additive key mask per forward, shared by all blocks: (B*H, 1, T).
    auto bias = torch::zeros({B, 1, T}, in.x.options())
                    .masked_fill(pad.unsqueeze(1), std::numeric_limits<float>::lowest() / 2)
                    .repeat_interleave(heads, 0);
    // Relative-position indices (and XL's sinusoids) depend only on T: built once, shared by all blocks.
    RelativePositions rel;
    if (net_->blocks->size()) rel = net_->blocks->ptr<BlockImpl>(0)->attention->relative_positions(T, in.x.options());
    auto x = in.x;
    for (const auto& m : *net_->blocks) {
      auto* block = m->as<BlockImpl>();
      if (checkpoint_activations_ && net_->is_training())
        // By value: the backward pass calls it again, after this function has returned.
        x = checkpointed([block, pad, bias, rel](const torch::Tensor& h) { return block->forward(h, pad, bias, rel); },
                         x, *block);
      else
        x = block->forward(x, pad, bias, rel);
    }
    return {x, in.lengths};
  }

 private:
  torch::Tensor drop_input(const torch::Tensor& x) const {
    return philox_dropout(x, input_dropout_, net_->is_training());
  }

  Conformer net_{nullptr};
  bool subsampling_ = true;
  std::int64_t d_model_ = 0;
  double input_dropout_ = 0;
  bool checkpoint_activations_ = false;
};

PluginDescriptor describe() {
  // 1.1: frontend, position, shaw_left, shaw_right; 1.2: upper bounds on the sizes (an absurd one is an
  // error at its line, not an allocation that fails or swaps); 1.3: checkpoint_activations; 1.4: dropout
  // masks from Philox (dropout.h), so a seed gives other masks than 1.3's, and linear_backend; 1.4.1: off the
  // CPU the masked norms run without first reading the mask back to the host
  return describe_plugin<ConformerEncoder>(PluginKind::Encoder, "conformer", "1.4.1",
      "Conformer blocks (Gulati et al. 2020) after Conv2D 4x subsampling (the SLAM/mSLAM speech encoder) or a "
      "linear projection (the shared encoder); optional relative positions (Transformer-XL or Shaw)",
      OptionSchema()
          .add_int("d_model", 144, "model dimension D", 8, 16384)
          .add_int("ffn_dim", 576, "feed-forward inner dimension (usually 4 D)", 1, 65536)
          .add_int("heads", 4, "attention heads (D must be divisible by it)", 1, 256)
          .add_int("layers", 4, "Conformer blocks", 0, 256)
          .add_int("kernel_size", 31, "depthwise convolution kernel (odd)", 1, 255)
          .add_choice("conv_norm", "batch", {"batch", "group", "layer"},
                      "norm in the conv module (mSLAM uses group norm for multimodal training)")
          .add_int("conv_norm_groups", 8, "groups for conv_norm = group", 1)
          .add_float("batch_norm_momentum", 0.1,
                     "conv_norm = batch: weight of each batch in the running statistics used at evaluation", 0, 1)
          .add_choice("frontend", "subsampling", {"subsampling", "projection"},
                      "embed(): subsampling = Conv2D 4x over (time, mel), the speech encoder; projection = "
                      "Linear(input_dim, d_model) at the input frame rate, the shared encoder over speech-encoder output")
          .add_int("subsampling_channels", 0, "Conv2D channels of the subsampling (0 = d_model)", 0, 16384)
          .add_choice("position", "none", {"none", "relative_xl", "shaw"},
                      "positions in self-attention: none (original w2v-BERT), relative_xl (Transformer-XL, Dai et al. "
                      "2019 sec. 3.3) or shaw (Shaw et al. 2018, clipped relative key embeddings)")
          .add_int("shaw_left", 64, "position = shaw: farthest distance to the left with its own embedding", 0)
          .add_int("shaw_right", 8, "position = shaw: farthest distance to the right with its own embedding", 0)
          .add_float("dropout", 0.1, "dropout in every sub-module and after the frontend", 0, 1)
          .add_choice("linear_backend", "auto", {"auto", "onednn", "blas"},
                      "the blocks' Linear layers on the CPU: onednn = 1x1 convolutions on LibTorch's own threads "
                      "(float32, where LibTorch has oneDNN), blas = torch::linear through the BLAS and its pool, "
                      "auto = onednn when LibTorch has more than one thread (trainer.threads), else blas")
          .add_bool("checkpoint_activations", false,
                    "keep only each block's input for the backward pass and compute the block again there: the "
                    "activations of one block in memory instead of all, for one more forward pass of the blocks"));
}

}  // namespace
}  // namespace workbench::conformer

WORKBENCH_PLUGIN(workbench::conformer::describe)
