#include "workbench/init_options.h"

#include <algorithm>

namespace workbench {

const OptionSchema& InitOptions::schema() {
  static const OptionSchema schema =
      OptionSchema()
          .add_string("checkpoint", "", "a checkpoint file to load weights from before training")
          .add_int("from_run", 0, "a run id in the store: load its checkpoint (`which`) and record it as the parent", 0)
          .add_choice("which", "final", {"final", "best", "last"},
                      "from_run: its final.pt, its best.pt, or the last checkpoint it wrote of any kind")
          .add_strings("components", {},
                       "what to load: speech_encoder, text_embedding, shared_encoder, modality_embedding, "
                       "objectives.<name>, or \"all\"; empty = every model part (the objectives' heads start new)")
          .add_choice("vocabulary", "auto", {"auto", "checkpoint", "data"},
                      "auto = the checkpoint's when a text embedding or an objective's head is loaded, else built "
                      "from this run's data (new heads sized from it)");
  return schema;
}

InitOptions InitOptions::from(const Options& t) {
  InitOptions o;
  o.checkpoint(t.get_string("checkpoint"))
      .from_run(t.get_int("from_run"))
      .which(t.get_string("which"))
      .components(t.get_strings("components"))
      .vocabulary(t.get_string("vocabulary"));
  if (!o.checkpoint().empty() && o.from_run() > 0)
    t.fail("from_run", "give either from_run or checkpoint, not both");
  if (o.from_run() == 0 && o.which() != "final")  // "final" is also what a resolved config writes back
    t.fail("which", "chooses among a run's checkpoints: it needs from_run");
  // components and vocabulary without a source are fine: one file serves as the fine-tuning run (with
  // --set init.from_run=ID) and as its random-initialisation baseline (without).
  for (const auto& c : o.components())
    if (c.empty()) t.fail("components", "a component name is empty");
  if (o.loads_all() && o.components().size() > 1)
    t.fail("components", "\"all\" already names every component; list it alone");
  o.source = t;
  return o;
}

bool InitOptions::loads_all() const {
  return std::find(components().begin(), components().end(), "all") != components().end();
}

bool InitOptions::uses_checkpoint_vocabulary(bool has_text_embedding) const {
  if (!active() || vocabulary() == "data") return false;
  if (vocabulary() == "checkpoint") return true;
  if (loads_all()) return true;
  if (components().empty()) return has_text_embedding;
  for (const auto& c : components())
    if (c == "text_embedding" || c.rfind("objectives.", 0) == 0) return true;
  return false;
}

}  // namespace workbench
