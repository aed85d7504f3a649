// The "conformer" encoder plugin: convolutional subsampling (the speech frontend) followed by N
// Conformer blocks. This is the speech encoder of SLAM/mSLAM (mSLAM figure 1; w2v-BERT section 3.1).
#include <cmath>
#include <limits>

#include <torch/nn/functional/dropout.h>
#include <torch/nn/modules/container/modulelist.h>

#include "conformer_block.h"
#include "subsampling.h"
#include "workbench/encoder.h"
#include "workbench/error.h"
#include "workbench/plugin.h"

namespace workbench::conformer {
namespace {

struct ConformerImpl : torch::nn::Module {
  ConformerImpl(std::int64_t input_dim, std::int64_t channels, std::int64_t layers, const BlockOptions& o)
      : dropout(o.dropout()) {
    subsampling = register_module("subsampling", Subsampling(input_dim, channels, o.d_model()));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (std::int64_t i = 0; i < layers; ++i) blocks->push_back(Block(o));
  }
  Subsampling subsampling{nullptr};
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
        .dropout(opt.get_float("dropout"));
    if (o.d_model() % o.heads() != 0)
      opt.fail("heads", "d_model (" + std::to_string(o.d_model()) + ") must be divisible by heads");
    if (o.kernel_size() % 2 == 0) opt.fail("kernel_size", "must be odd so that the output keeps its length");
    if (o.conv_norm() == "group" && o.d_model() % o.conv_norm_groups() != 0)
      opt.fail("conv_norm_groups", "d_model must be divisible by it");
    if (ctx.input_dim < SubsamplingImpl::kMinFrames)
      throw ConfigError("the conformer's subsampling needs at least 7 input features per frame");
    d_model_ = o.d_model();
    std::int64_t channels = opt.get_int("subsampling_channels");
    if (channels == 0) channels = d_model_;
    input_dropout_ = o.dropout();
    net_ = Conformer(ctx.input_dim, channels, opt.get_int("layers"), o);
  }

  torch::nn::Module& module() override { return *net_; }
  std::int64_t output_dim() const override { return d_model_; }

  EncoderOutput embed(const torch::Tensor& features, const torch::Tensor& lengths) override {
    // A batch of clips shorter than the subsampling's receptive field would fail inside Conv2d; pad it
    // so that those rows come out with length 0 (CTC then counts them as 0 with zero_infinity).
    auto padded = features;
    if (features.size(1) < SubsamplingImpl::kMinFrames)
      padded = torch::constant_pad_nd(features, {0, 0, 0, SubsamplingImpl::kMinFrames - features.size(1)});
    auto x = net_->subsampling(padded);
    auto out_lengths = torch::clamp(SubsamplingImpl::output_lengths(lengths), 0, x.size(1));
    if (net_->is_training() && input_dropout_ > 0)
      x = torch::nn::functional::dropout(x, torch::nn::functional::DropoutFuncOptions().p(input_dropout_).training(true));
    return {x, out_lengths};
  }

  EncoderOutput encode(const EncoderOutput& in) override {
    const auto B = in.x.size(0), T = in.x.size(1);
    auto pad = padding_mask(in.lengths, T);  // (B, T)
    const auto heads = net_->blocks->size() ? net_->blocks->ptr<BlockImpl>(0)->attention->heads : 1;
    // One additive key mask per forward, shared by all blocks: (B*H, 1, T).
    auto bias = torch::zeros({B, 1, T}, in.x.options())
                    .masked_fill(pad.unsqueeze(1), std::numeric_limits<float>::lowest() / 2)
                    .repeat_interleave(heads, 0);
    auto x = in.x;
    for (const auto& m : *net_->blocks) x = m->as<BlockImpl>()->forward(x, pad, bias);
    return {x, in.lengths};
  }

 private:
  Conformer net_{nullptr};
  std::int64_t d_model_ = 0;
  double input_dropout_ = 0;
};

PluginDescriptor describe() {
  PluginDescriptor d;
  d.kind = PluginKind::Encoder;
  d.name = "conformer";
  d.version = "1.0.0";
  d.description = "Conv2D 4x subsampling + Conformer blocks (Gulati et al. 2020), the SLAM/mSLAM speech encoder";
  d.options.add_int("d_model", 144, "model dimension D", 8)
      .add_int("ffn_dim", 576, "feed-forward inner dimension (usually 4 D)", 1)
      .add_int("heads", 4, "attention heads (D must be divisible by it)", 1)
      .add_int("layers", 4, "Conformer blocks", 0)
      .add_int("kernel_size", 31, "depthwise convolution kernel (odd)", 1)
      .add_choice("conv_norm", "batch", {"batch", "group", "layer"},
                  "norm in the conv module (mSLAM uses group norm for multimodal training)")
      .add_int("conv_norm_groups", 8, "groups for conv_norm = group", 1)
      .add_float("batch_norm_momentum", 0.1,
                 "conv_norm = batch: weight of each batch in the running statistics used at evaluation", 0, 1)
      .add_int("subsampling_channels", 0, "Conv2D channels of the subsampling (0 = d_model)", 0)
      .add_float("dropout", 0.1, "dropout in every sub-module and after the subsampling", 0, 1);
  d.create = [](const Options& o, const BuildContext& c) -> std::shared_ptr<Component> {
    return std::make_shared<ConformerEncoder>(o, c);
  };
  return d;
}

}  // namespace
}  // namespace workbench::conformer

WORKBENCH_PLUGIN(workbench::conformer::describe)
