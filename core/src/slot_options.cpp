#include "workbench/slot_options.h"

namespace workbench {

const OptionSchema& ObjectiveOptions::schema() {
  static const OptionSchema schema = OptionSchema()
                                         .add_string("plugin", "", "loss plugin")
                                         .add_float("weight", 1.0, "weight of this loss in the sum", 0)
                                         .add_string("data", "train", "the [data.<name>] it trains on");
  return schema;
}

ObjectiveOptions ObjectiveOptions::from(const Options& t) {
  return ObjectiveOptions().weight(t.get_float("weight")).data(t.get_string("data"));
}

const OptionSchema& EvaluatorOptions::schema() {
  static const OptionSchema schema =
      OptionSchema()
          .add_string("plugin", "", "evaluator plugin")
          .add_string("data", "dev", "the [data.<name>] it evaluates on")
          .add_int("every", 0, "evaluate every N steps (0 = at the start and the end only)", 0);
  return schema;
}

EvaluatorOptions EvaluatorOptions::from(const Options& t) {
  return EvaluatorOptions().data(t.get_string("data")).every(t.get_int("every"));
}

}  // namespace workbench
