// The conformer encoder plugin's position schemes (none, relative_xl, shaw) and frontends
// (subsampling, projection): through the registry, as the core builds it, and the attention module on
// its own for properties that the full block would blur.
//
// The plugin is a MODULE library that nothing links against, so the attention-level cases compile the
// block's source into this test. Executables here do not export their symbols, so the plugin loaded
// by the registry keeps its own copy.
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "../plugins/encoder/conformer/conformer_block.h"
#include "../plugins/encoder/conformer/relative_position.h"
#include "workbench/encoder.h"
#include "workbench/npy.h"
#include "workbench/error.h"
#include "workbench/registry.h"

#include "test_support.h"

#include <catch2/catch.hpp>

using namespace workbench;
using Catch::Matchers::Contains;
namespace wc = workbench::conformer;

namespace {

const std::vector<std::string> kPositions = {"none", "relative_xl", "shaw"};

const Registry& registry() {
  static const Registry* r = [] {
    auto* reg = new Registry();
    reg->load_directory(Registry::builtin_plugin_dir());
    return reg;
  }();
  return *r;
}

/// A one-block conformer small enough for 2 cores; every other option at its default.
Options tiny_options(const std::string& position, const std::string& frontend = "subsampling") {
  Options o("model.speech_encoder");
  for (const auto& spec : registry().get(PluginKind::Encoder, "conformer", "test").descriptor.options.specs())
    o.set(spec.name, spec.default_value, "default");
  o.set("d_model", std::int64_t{32}, "test");
  o.set("heads", std::int64_t{2}, "test");
  o.set("layers", std::int64_t{1}, "test");
  o.set("ffn_dim", std::int64_t{64}, "test");
  o.set("kernel_size", std::int64_t{7}, "test");
  o.set("subsampling_channels", std::int64_t{8}, "test");
  o.set("position", position, "test");
  o.set("frontend", frontend, "test");
  return o;
}

std::shared_ptr<Encoder> make_encoder(const Options& o, std::int64_t input_dim = 80) {
  BuildContext ctx;
  ctx.input_dim = input_dim;
  return registry().create_as<Encoder>(PluginKind::Encoder, "conformer", o, ctx);
}

std::set<std::string> names_of(const torch::OrderedDict<std::string, torch::Tensor>& dict) {
  std::set<std::string> names;
  for (const auto& item : dict) names.insert(item.key());
  return names;
}

torch::Tensor named(torch::nn::Module& m, const std::string& name) {
  auto params = m.named_parameters();
  const auto* p = params.find(name);
  REQUIRE(p != nullptr);
  return *p;
}

template <typename F>
std::string config_error(F&& f) {
  return workbench::testing::error_message<ConfigError>(std::forward<F>(f));
}

wc::BlockOptions attention_options(const std::string& position) {
  return wc::BlockOptions().d_model(8).heads(2).dropout(0.0).position(position).shaw_left(3).shaw_right(2);
}

}  // namespace

TEST_CASE("relative_position_index gives j - i, clipped to [-left, right], shifted by left", "[conformer]") {
  const std::int64_t T = 7, left = 3, right = 2;
  auto index = wc::relative_position_index(T, left, right);
  REQUIRE(index.sizes() == torch::IntArrayRef({T, T}));
  REQUIRE(index.dtype() == torch::kInt64);
  auto a = index.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < T; ++i)
    for (std::int64_t j = 0; j < T; ++j) {
      INFO("i = " << i << ", j = " << j);
      CHECK(a[i][j] == std::min(std::max(j - i, -left), right) + left);
    }
  CHECK(a[3][3] == 3);  // distance 0 is row `left`
  CHECK(a[3][4] == 4);
  CHECK(a[3][2] == 2);
  CHECK(a[0][2] == 5);  // +2: the last row, unclipped
  CHECK(a[0][6] == 5);  // +6 clipped to +right
  CHECK(a[3][0] == 0);  // -3: the first row, unclipped
  CHECK(a[6][0] == 0);  // -6 clipped to -left
  CHECK(index.min().item<std::int64_t>() == 0);
  CHECK(index.max().item<std::int64_t>() == left + right);

  // Transformer-XL's unclipped table over 2T - 1 distances: j - i + T - 1.
  auto xl = wc::relative_position_index(T, T - 1, T - 1);
  auto x = xl.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < T; ++i)
    for (std::int64_t j = 0; j < T; ++j) CHECK(x[i][j] == j - i + T - 1);
  CHECK(xl.max().item<std::int64_t>() == 2 * T - 2);

  // T = 1: one pair, distance 0.
  CHECK(wc::relative_position_index(1, 64, 8).item<std::int64_t>() == 64);
}

TEST_CASE("relative_sinusoids: row r is R_{i-j} for i - j = T - 1 - r", "[conformer]") {
  for (std::int64_t D : {8, 7}) {
    INFO("D = " << D);
    const std::int64_t T = 5, half = (D + 1) / 2;
    auto R = wc::relative_sinusoids(T, D);
    REQUIRE(R.sizes() == torch::IntArrayRef({2 * T - 1, D}));
    for (std::int64_t r = 0; r < 2 * T - 1; ++r) {
      const double d = static_cast<double>(T - 1 - r);
      for (std::int64_t m = 0; m < D; ++m) {
        const std::int64_t f = m < half ? m : m - half;
        const double w = std::pow(10000.0, -2.0 * static_cast<double>(f) / static_cast<double>(D));
        const double expected = m < half ? std::sin(d * w) : std::cos(d * w);
        CHECK(R[r][m].item<double>() == Approx(expected).margin(1e-5));
      }
    }
  }
}

TEST_CASE("every position mode gives finite (B, T', D) outputs", "[conformer]") {
  for (const auto& position : kPositions) {
    INFO("position = " << position);
    torch::manual_seed(0);
    auto encoder = make_encoder(tiny_options(position));
    auto features = torch::randn({2, 100, 80});
    auto lengths = torch::tensor(std::vector<std::int64_t>{100, 61});
    for (bool training : {true, false}) {
      INFO("training = " << training);
      encoder->module().train(training);
      torch::NoGradGuard no_grad;
      auto out = encoder->forward(features, lengths);
      CHECK(out.x.sizes() == torch::IntArrayRef({2, 24, 32}));
      CHECK(torch::isfinite(out.x).all().item<bool>());
      CHECK(out.lengths[0].item<std::int64_t>() == 24);
      CHECK(out.lengths[1].item<std::int64_t>() == 14);
    }
    // One output frame, and a batch of one-frame rows: the relative tables have a single distance.
    encoder->module().eval();
    torch::NoGradGuard no_grad;
    auto one = encoder->forward(torch::randn({3, 7, 80}), torch::tensor(std::vector<std::int64_t>{7, 7, 3}));
    CHECK(one.x.sizes() == torch::IntArrayRef({3, 1, 32}));
    CHECK(torch::isfinite(one.x).all().item<bool>());
  }
}

TEST_CASE("outputs at valid frames ignore padding, in every position mode", "[conformer]") {
  for (const auto& position : kPositions) {
    INFO("position = " << position);
    torch::manual_seed(1);
    auto encoder = make_encoder(tiny_options(position));
    encoder->module().eval();
    torch::NoGradGuard no_grad;
    auto features = torch::randn({2, 100, 80});
    auto lengths = torch::tensor(std::vector<std::int64_t>{100, 61});
    auto out = encoder->forward(features, lengths);
    const auto valid = out.lengths[1].item<std::int64_t>();
    REQUIRE(valid == 14);

    // Other values in the padded frames.
    auto other = features.clone();
    other[1].narrow(0, 61, 39).copy_(torch::randn({39, 80}) * 5 + 3);
    auto out_other = encoder->forward(other, lengths);
    CHECK(torch::allclose(out.x[0], out_other.x[0], 1e-5, 1e-5));
    CHECK(torch::allclose(out.x[1].narrow(0, 0, valid), out_other.x[1].narrow(0, 0, valid), 1e-5, 1e-5));

    // No padding at all: the row on its own. This changes T, and with it the relative tables.
    auto alone = encoder->forward(features[1].narrow(0, 0, 61).unsqueeze(0), lengths.narrow(0, 1, 1));
    REQUIRE(alone.x.size(1) == valid);
    CHECK(torch::allclose(out.x[1].narrow(0, 0, valid), alone.x[0], 1e-4, 1e-5));
  }
}

TEST_CASE("in training, a row's output does not depend on its padding or its neighbours, for every conv_norm",
          "[conformer][padding]") {
  // Below the frontend: encode() of (B, T', D) vectors, dropout off so that training mode is deterministic.
  // Group and layer norm take statistics per row, so a row batched alone must match the same row beside
  // one four times longer. Batch norm takes them over the batch's valid frames, so a neighbour changes them
  // by design; there the row must not depend on how much padding follows it, and the running statistics
  // must be those of its valid frames.
  for (const std::string norm : {"group", "layer", "batch"}) {
    INFO("conv_norm = " << norm);
    torch::manual_seed(5);
    auto o = tiny_options("none");
    o.set("conv_norm", norm, "test");
    o.set("dropout", 0.0, "test");
    o.set("layers", std::int64_t{2}, "test");
    auto encoder = make_encoder(o);
    encoder->module().train(true);
    const std::int64_t L = 12, D = 32;
    auto row = torch::randn({1, L, D});
    auto alone = encoder->encode({row, torch::tensor(std::vector<std::int64_t>{L})});
    if (norm != "batch") {
      auto longer = torch::randn({1, 4 * L, D}) * 3 + 1;
      auto both = torch::cat({torch::cat({row, torch::zeros({1, 3 * L, D})}, 1), longer}, 0);
      auto out = encoder->encode({both, torch::tensor(std::vector<std::int64_t>{L, 4 * L})});
      CHECK(torch::allclose(out.x[0].narrow(0, 0, L), alone.x[0], 1e-5, 1e-5));
    } else {
      auto running = [&]() {
        std::vector<torch::Tensor> out;
        for (const auto& b : encoder->module().named_buffers())
          if (b.key().find("running_") != std::string::npos) out.push_back(b.value().clone());
        return out;
      };
      // Fresh running statistics for each variant: reset them to their initial values.
      auto reset = [&]() {
        torch::NoGradGuard no_grad;
        for (auto& b : encoder->module().named_buffers()) {
          if (b.key().find("running_mean") != std::string::npos) b.value().zero_();
          if (b.key().find("running_var") != std::string::npos) b.value().fill_(1.0);
        }
      };
      reset();
      auto alone_again = encoder->encode({row, torch::tensor(std::vector<std::int64_t>{L})});
      const auto stats_alone = running();
      reset();
      auto padded = torch::cat({row, torch::randn({1, 3 * L, D}) * 4}, 1);
      auto out = encoder->encode({padded, torch::tensor(std::vector<std::int64_t>{L})});
      const auto stats_padded = running();
      CHECK(torch::allclose(out.x[0].narrow(0, 0, L), alone_again.x[0], 1e-5, 1e-5));
      REQUIRE(stats_alone.size() == stats_padded.size());
      REQUIRE(stats_alone.size() == 4);  // mean and variance of two blocks
      for (std::size_t i = 0; i < stats_alone.size(); ++i) CHECK(torch::allclose(stats_alone[i], stats_padded[i], 1e-5, 1e-6));
    }
  }
}

TEST_CASE("batch norm: two forwards in one step, one padded and one not, then one backward", "[conformer][padding]") {
  // What a step with several objectives does (w2v-BERT, TLM and CTC all run the speech encoder): the
  // fused and the masked statistics alternate, and the running statistics they update must not void what
  // the other forward saved for backward.
  torch::manual_seed(9);
  auto o = tiny_options("none");
  o.set("conv_norm", std::string("batch"), "test");
  auto encoder = make_encoder(o);
  encoder->module().train(true);
  const std::int64_t D = 32;
  auto full = encoder->encode({torch::randn({2, 10, D}, torch::requires_grad()), torch::tensor(std::vector<std::int64_t>{10, 10})});
  auto padded = encoder->encode({torch::randn({2, 10, D}), torch::tensor(std::vector<std::int64_t>{10, 6})});
  auto again = encoder->encode({torch::randn({2, 10, D}), torch::tensor(std::vector<std::int64_t>{10, 10})});
  CHECK_NOTHROW((full.x.sum() + padded.x.sum() + again.x.sum()).backward());
}

TEST_CASE("golden: our blocks match torchaudio.models.Conformer with the same weights", "[conformer][golden]") {
  // tests/golden/make_conformer_golden.py: torchaudio 0.13.1's Conformer from a seed, its weights saved
  // under our names, an input and its output. Evaluation mode, full-length rows (see the script for why).
  for (const std::string norm : {"batch", "group"}) {
    INFO("conv_norm = " << norm);
    const std::string dir = std::string(WORKBENCH_TEST_DATA_DIR) + "/conformer_golden/" + norm;
    auto o = tiny_options("none", "projection");
    o.set("d_model", std::int64_t{16}, "golden");
    o.set("ffn_dim", std::int64_t{32}, "golden");
    o.set("heads", std::int64_t{2}, "golden");
    o.set("layers", std::int64_t{2}, "golden");
    o.set("kernel_size", std::int64_t{7}, "golden");
    o.set("conv_norm", norm, "golden");
    o.set("conv_norm_groups", std::int64_t{1}, "golden");  // torchaudio's use_group_norm: one group
    auto encoder = make_encoder(o, 16);
    encoder->module().eval();
    auto params = encoder->module().named_parameters();
    auto buffers = encoder->module().named_buffers();
    std::ifstream names(dir + "/weights.txt");
    REQUIRE(names.good());
    std::string name;
    std::size_t loaded = 0;
    torch::NoGradGuard no_grad;
    while (std::getline(names, name)) {
      if (name.empty()) continue;
      INFO(name);
      auto value = read_npy(dir + "/" + name + ".npy");
      torch::Tensor* target = params.find(name);
      if (!target) target = buffers.find(name);
      REQUIRE(target != nullptr);
      REQUIRE(target->sizes() == value.sizes());
      target->copy_(value);
      ++loaded;
    }
    // Every block parameter came from torchaudio (only the unused projection frontend did not).
    std::size_t block_params = 0;
    for (const auto& p : params)
      if (p.key().rfind("blocks.", 0) == 0) ++block_params;
    CHECK(loaded >= block_params);
    auto x = read_npy(dir + "/input.npy");
    auto expected = read_npy(dir + "/output.npy");
    auto lengths = torch::full({x.size(0)}, x.size(1), torch::kInt64);
    auto y = encoder->encode({x, lengths}).x;
    REQUIRE(y.sizes() == expected.sizes());
    CHECK((y - expected).abs().max().item<double>() < 1e-4);
  }
}

TEST_CASE("position = none keeps the parameter names of checkpoints from before positions existed",
          "[conformer]") {
  const std::set<std::string> before = {
      "subsampling.conv1.weight", "subsampling.conv1.bias", "subsampling.conv2.weight", "subsampling.conv2.bias",
      "subsampling.project.weight", "subsampling.project.bias",
      "blocks.0.ffn1.norm.weight", "blocks.0.ffn1.norm.bias", "blocks.0.ffn1.up.weight", "blocks.0.ffn1.up.bias",
      "blocks.0.ffn1.down.weight", "blocks.0.ffn1.down.bias",
      "blocks.0.attention.norm.weight", "blocks.0.attention.norm.bias", "blocks.0.attention.qkv.weight",
      "blocks.0.attention.qkv.bias", "blocks.0.attention.out.weight", "blocks.0.attention.out.bias",
      "blocks.0.conv.norm.weight", "blocks.0.conv.norm.bias", "blocks.0.conv.pointwise_in.weight",
      "blocks.0.conv.pointwise_in.bias", "blocks.0.conv.depthwise.weight", "blocks.0.conv.depthwise.bias",
      "blocks.0.conv.batch_norm.weight", "blocks.0.conv.batch_norm.bias", "blocks.0.conv.pointwise_out.weight",
      "blocks.0.conv.pointwise_out.bias",
      "blocks.0.ffn2.norm.weight", "blocks.0.ffn2.norm.bias", "blocks.0.ffn2.up.weight", "blocks.0.ffn2.up.bias",
      "blocks.0.ffn2.down.weight", "blocks.0.ffn2.down.bias",
      "blocks.0.final_norm.weight", "blocks.0.final_norm.bias"};
  const std::set<std::string> buffers = {"blocks.0.conv.batch_norm.running_mean",
                                         "blocks.0.conv.batch_norm.running_var",
                                         "blocks.0.conv.batch_norm.num_batches_tracked"};
  auto none = make_encoder(tiny_options("none"));
  CHECK(names_of(none->module().named_parameters()) == before);
  CHECK(names_of(none->module().named_buffers()) == buffers);

  auto with = [&](std::vector<std::string> extra) {
    auto names = before;
    for (auto& e : extra) names.insert("blocks.0.attention." + e);
    return names;
  };
  auto xl = make_encoder(tiny_options("relative_xl"));
  CHECK(names_of(xl->module().named_parameters()) == with({"pos_proj.weight", "pos_bias_u", "pos_bias_v"}));
  CHECK(names_of(xl->module().named_buffers()) == buffers);
  auto shaw = make_encoder(tiny_options("shaw"));
  CHECK(names_of(shaw->module().named_parameters()) == with({"rel_key"}));

  // Shapes: W_r (D, D) without bias; u, v (H, dh); Shaw's table (left + right + 1, dh) for all heads.
  CHECK(named(xl->module(), "blocks.0.attention.pos_proj.weight").sizes() == torch::IntArrayRef({32, 32}));
  CHECK(named(xl->module(), "blocks.0.attention.pos_bias_u").sizes() == torch::IntArrayRef({2, 16}));
  CHECK(named(xl->module(), "blocks.0.attention.pos_bias_v").sizes() == torch::IntArrayRef({2, 16}));
  CHECK(named(shaw->module(), "blocks.0.attention.rel_key").sizes() == torch::IntArrayRef({64 + 8 + 1, 16}));
}

TEST_CASE("gradients reach the relative-position parameters", "[conformer]") {
  for (const std::string position : {"relative_xl", "shaw"}) {
    INFO("position = " << position);
    torch::manual_seed(2);
    auto o = tiny_options(position);
    o.set("dropout", 0.0, "test");
    auto encoder = make_encoder(o);
    encoder->module().train();
    auto out = encoder->forward(torch::randn({2, 100, 80}), torch::tensor(std::vector<std::int64_t>{100, 61}));
    // Not a plain sum: the final LayerNorm's outputs sum to a constant, whose gradient is zero.
    (out.x * torch::randn(out.x.sizes())).sum().backward();
    auto has_gradient = [&](const std::string& name) {
      auto g = named(encoder->module(), "blocks.0.attention." + name).grad();
      return g.defined() && torch::isfinite(g).all().item<bool>() && g.abs().sum().item<double>() > 0;
    };
    if (position == "relative_xl") {
      CHECK(has_gradient("pos_bias_u"));
      CHECK(has_gradient("pos_bias_v"));
      CHECK(has_gradient("pos_proj.weight"));
    } else {
      REQUIRE(has_gradient("rel_key"));
      // T' = 24, so distances -23..+8 are used (rows 41..72 of 73) and the rows beyond -23 are not.
      auto g = named(encoder->module(), "blocks.0.attention.rel_key").grad().abs().sum(1);
      CHECK(g.narrow(0, 0, 41).sum().item<double>() == 0.0);
      CHECK((g.narrow(0, 41, 32) > 0).all().item<bool>());
    }
  }
}

TEST_CASE("relative position scores depend on j - i only", "[conformer]") {
  for (const std::string position : {"relative_xl", "shaw"}) {
    INFO("position = " << position);
    torch::manual_seed(3);
    wc::SelfAttention attention(attention_options(position));
    attention->eval();
    torch::NoGradGuard no_grad;
    const std::int64_t B = 2, H = 2, dh = 4, T = 9;
    auto rel = attention->relative_positions(T, torch::kFloat32);

    // The same query at every position: the score for (i, j) equals that for (i + s, j + s).
    auto q = torch::randn({B * H, 1, dh}).expand({B * H, T, dh}).contiguous();
    auto s = attention->position_scores(q, rel);
    REQUIRE(s.sizes() == torch::IntArrayRef({B * H, T, T}));
    for (std::int64_t shift = 1; shift < T; ++shift) {
      INFO("shift = " << shift);
      CHECK(torch::allclose(s.narrow(1, 0, T - shift).narrow(2, 0, T - shift),
                            s.narrow(1, shift, T - shift).narrow(2, shift, T - shift), 1e-5, 1e-6));
    }
    // ...and the diagonals differ, so the property is not a constant in disguise.
    CHECK_FALSE(torch::allclose(s[0][0][1], s[0][1][0]));

    // Any query: the formula of each paper, entry by entry, without the gather.
    q = torch::randn({B * H, T, dh});
    s = attention->position_scores(q, rel);
    for (std::int64_t n = 0; n < B * H; ++n) {
      const std::int64_t h = n % H;  // heads fastest within a batch row
      for (std::int64_t i = 0; i < T; ++i)
        for (std::int64_t j = 0; j < T; ++j) {
          torch::Tensor expected;
          if (position == "shaw") {
            const auto d = std::min(std::max(j - i, std::int64_t{-3}), std::int64_t{2});
            expected = q[n][i].dot(attention->rel_key[d + 3]);
          } else {
            // R_{i-j} with Transformer-XL's [sin, cos] layout, projected by W_r, head h's slice.
            const std::int64_t D = 8, half = D / 2;
            auto w = torch::pow(10000.0, torch::arange(0, half, torch::kFloat64) * (-2.0 / D));
            auto angle = w * static_cast<double>(i - j);
            auto R = torch::cat({torch::sin(angle), torch::cos(angle)}).to(torch::kFloat32);
            auto WR = attention->pos_proj->weight.matmul(R).narrow(0, h * dh, dh);
            expected = (q[n][i] + attention->pos_bias_v[h]).dot(WR);
          }
          INFO("n = " << n << ", i = " << i << ", j = " << j);
          CHECK(s[n][i][j].item<double>() == Approx(expected.item<double>()).margin(1e-5));
        }
    }
  }
}

TEST_CASE("relative attention with its positional parameters zeroed is plain attention", "[conformer]") {
  torch::manual_seed(4);
  wc::SelfAttention none(attention_options("none"));
  none->eval();
  const std::int64_t B = 2, T = 6;
  auto x = torch::randn({B, T, 8});
  auto pad = torch::tensor(std::vector<std::int64_t>{6, 4});
  auto mask = padding_mask(pad, T);
  auto bias = torch::zeros({B, 1, T}).masked_fill(mask.unsqueeze(1), -1e9).repeat_interleave(2, 0);
  torch::NoGradGuard no_grad;
  auto expected = none->forward(x, bias);
  for (const std::string position : {"relative_xl", "shaw"}) {
    INFO("position = " << position);
    wc::SelfAttention rel(attention_options(position));
    rel->eval();
    auto from = none->named_parameters();
    for (auto& p : rel->named_parameters()) {
      if (const auto* src = from.find(p.key()))
        p.value().copy_(*src);
      else
        p.value().zero_();
    }
    auto got = rel->forward(x, bias, rel->relative_positions(T, x.options()));
    CHECK(torch::allclose(got, expected, 1e-5, 1e-6));
    // Nonzero positional parameters change the output.
    for (auto& p : rel->named_parameters())
      if (!from.find(p.key())) p.value().normal_();
    CHECK_FALSE(torch::allclose(rel->forward(x, bias, rel->relative_positions(T, x.options())), expected, 1e-3));
  }
}

TEST_CASE("the projection frontend maps (B, T, input_dim) to (B, T, d_model) at the same lengths", "[conformer]") {
  for (const auto& position : kPositions) {
    INFO("position = " << position);
    torch::manual_seed(5);
    // A shared encoder reads the speech encoder's output; 4 features would be too few to subsample.
    for (std::int64_t input_dim : {48, 4}) {
      INFO("input_dim = " << input_dim);
      auto encoder = make_encoder(tiny_options(position, "projection"), input_dim);
      CHECK(encoder->output_dim() == 32);
      auto params = names_of(encoder->module().named_parameters());
      CHECK(params.count("projection.weight") == 1);
      CHECK(params.count("projection.bias") == 1);
      for (const auto& n : params) CHECK(n.rfind("subsampling.", 0) == std::string::npos);
      CHECK(named(encoder->module(), "projection.weight").sizes() == torch::IntArrayRef({32, input_dim}));

      encoder->module().eval();
      torch::NoGradGuard no_grad;
      auto x = torch::randn({3, 9, input_dim});
      auto lengths = torch::tensor(std::vector<std::int64_t>{9, 5, 1});
      auto embedded = encoder->embed(x, lengths);
      CHECK(embedded.x.sizes() == torch::IntArrayRef({3, 9, 32}));
      CHECK(torch::equal(embedded.lengths, lengths));
      auto out = encoder->encode(embedded);
      CHECK(out.x.sizes() == torch::IntArrayRef({3, 9, 32}));
      CHECK(torch::equal(out.lengths, lengths));
      CHECK(torch::isfinite(out.x).all().item<bool>());
      // A single frame is enough: there is no receptive field to fill.
      auto one = encoder->forward(torch::randn({1, 1, input_dim}), torch::tensor(std::vector<std::int64_t>{1}));
      CHECK(one.x.sizes() == torch::IntArrayRef({1, 1, 32}));
    }
  }
}

TEST_CASE("the conformer rejects bad position and frontend options with the key", "[conformer]") {
  auto o = tiny_options("shaw");
  o.set("shaw_left", std::int64_t{0}, "exp.toml:9:1");
  o.set("shaw_right", std::int64_t{0}, "exp.toml:10:1");
  CHECK_THAT(config_error([&] { make_encoder(o); }), Contains("exp.toml:10:1") && Contains("shaw_right"));
  // The same window is fine when Shaw's positions are off.
  o.set("position", std::string("none"), "test");
  CHECK_NOTHROW(make_encoder(o));

  auto bad = tiny_options("rotary");
  CHECK_THAT(config_error([&] { make_encoder(bad); }), Contains("position") && Contains("relative_xl"));
  bad = tiny_options("none", "wav2vec");
  CHECK_THAT(config_error([&] { make_encoder(bad); }), Contains("frontend") && Contains("projection"));
  // The subsampling still needs 7 features per frame.
  CHECK_THAT(config_error([&] { make_encoder(tiny_options("none"), 4); }), Contains("7"));
}

TEST_CASE("checkpoint_activations: the same outputs, gradients, batch-norm statistics and random stream",
          "[conformer][checkpoint]") {
  auto run = [](bool checkpoint) {
    auto o = tiny_options("relative_xl");
    o.set("layers", std::int64_t{2}, "test");
    o.set("dropout", 0.1, "test");  // dropout in every block: the recomputation must draw the same masks
    o.set("checkpoint_activations", checkpoint, "test");
    torch::manual_seed(5);
    auto encoder = make_encoder(o);
    encoder->module().train();
    // Padded rows (masked batch norm), then a batch without padding (LibTorch's own batch norm).
    auto out = encoder->forward(torch::randn({2, 100, 80}), torch::tensor(std::vector<std::int64_t>{100, 61}));
    (out.x * out.x).sum().backward();
    auto full = encoder->forward(torch::randn({2, 60, 80}), torch::tensor(std::vector<std::int64_t>{60, 60}));
    (full.x * full.x).sum().backward();
    struct Result {
      torch::Tensor x, after;
      std::vector<torch::Tensor> grads, buffers;
      std::string last_node;  // what made the output: the checkpoint, or the last block's own last op
    } r;
    r.last_node = out.x.grad_fn()->name();
    r.x = out.x.detach();
    r.after = torch::rand({4});  // where the random stream is after the backward pass
    for (const auto& p : encoder->module().parameters()) r.grads.push_back(p.grad());
    for (const auto& b : encoder->module().buffers()) r.buffers.push_back(b.clone());
    return r;
  };
  const auto plain = run(false);
  const auto checkpointed = run(true);
  CHECK_THAT(checkpointed.last_node, Contains("CheckpointFunction"));
  CHECK_THAT(plain.last_node, !Contains("CheckpointFunction"));
  CHECK(torch::equal(plain.x, checkpointed.x));
  CHECK(torch::equal(plain.after, checkpointed.after));
  REQUIRE(plain.grads.size() == checkpointed.grads.size());
  for (std::size_t i = 0; i < plain.grads.size(); ++i) {
    INFO("parameter " << i);
    REQUIRE(checkpointed.grads[i].defined());
    CHECK(torch::allclose(plain.grads[i], checkpointed.grads[i], 1e-5, 1e-7));
  }
  REQUIRE(plain.buffers.size() == checkpointed.buffers.size());
  REQUIRE_FALSE(plain.buffers.empty());  // the conv modules' batch norms
  for (std::size_t i = 0; i < plain.buffers.size(); ++i) CHECK(torch::equal(plain.buffers[i], checkpointed.buffers[i]));
}
