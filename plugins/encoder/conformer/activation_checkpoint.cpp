#include "activation_checkpoint.h"

#include <mutex>
#include <vector>

#include <ATen/Context.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>

namespace workbench::conformer {
namespace {

struct Recompute : torch::CustomClassHolder {
  std::function<torch::Tensor(const torch::Tensor&)> block;
  torch::nn::Module* owner = nullptr;
};

at::Tensor generator_state(at::Generator g) {
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}

void set_generator_state(at::Generator& g, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(state);
}

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  // Runs with gradients off (Function::apply's doing): nothing of the block is recorded.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const c10::intrusive_ptr<Recompute>& recompute) {
    ctx->saved_data["rng"] = generator_state(at::globalContext().defaultGenerator(x.device()));
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(recompute);
    ctx->save_for_backward({x});
    return recompute->block(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    auto recompute = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["recompute"].toCapsule());
    at::Generator gen = at::globalContext().defaultGenerator(x.device());
    const at::Tensor now = generator_state(gen);
    set_generator_state(gen, ctx->saved_data["rng"].toTensor());
    std::vector<torch::Tensor> buffers = recompute->owner->buffers();
    std::vector<torch::Tensor> kept;
    kept.reserve(buffers.size());
    for (const auto& b : buffers) kept.push_back(b.clone());

    torch::Tensor input = x.detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = recompute->block(input);
    }
    set_generator_state(gen, now);
    // Into the parameters' .grad directly, as torch.utils.checkpoint's reentrant variant does.
    torch::autograd::backward({y}, {grads[0]});
    // Only now: batch norm's backward checks that the running statistics it saw are unchanged.
    {
      torch::NoGradGuard no_grad;
      for (std::size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(kept[i]);
    }
    return {input.grad(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpointed(const std::function<torch::Tensor(const torch::Tensor&)>& block, const torch::Tensor& x,
                           torch::nn::Module& owner) {
  if (!torch::GradMode::is_enabled() || !x.requires_grad()) return block(x);
  auto recompute = c10::make_intrusive<Recompute>();
  recompute->block = block;
  recompute->owner = &owner;
  return CheckpointFunction::apply(x, recompute);
}

}  // namespace workbench::conformer
