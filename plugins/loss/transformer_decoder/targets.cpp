#include "targets.h"

#include <utility>

#include "spm_api.h"  // plugins/text/common

namespace workbench::transformer_decoder {

namespace {

constexpr const char* kPiecesTag = "sentencepiece\n";

std::string shim_path() { return spm::shim_beside(reinterpret_cast<const void*>(&shim_path)); }

const spm::Api& api() {
  static const spm::Api opened = spm::Api::open(shim_path());
  return opened;
}

}  // namespace

TargetUnits TargetUnits::characters(const std::vector<std::string>& targets) {
  TargetUnits u;
  u.characters_ = Vocabulary::from_texts(targets);
  return u;
}

TargetUnits TargetUnits::sentencepiece(const std::vector<std::string>& targets, std::int64_t vocab_size,
                                       std::uint64_t seed) {
  // No <s>, </s> or <pad>: padding is our 0 and the decoder has its own end symbol. Single-threaded and
  // seeded, so that the same targets give the same pieces in every run and every rank.
  const std::vector<std::pair<std::string, std::string>> args = {
      {"model_type", "unigram"},   {"vocab_size", std::to_string(vocab_size)},
      {"character_coverage", "1"}, {"unk_id", "0"},
      {"bos_id", "-1"},            {"eos_id", "-1"},
      {"pad_id", "-1"},            {"num_threads", "1"},
      {"minloglevel", "1"},        {"hard_vocab_limit", "false"},
  };
  TargetUnits u;
  u.proto_ = spm::train(api(), targets, args, static_cast<unsigned>(seed % 0xFFFFFFFFull));
  u.pieces_ = std::make_shared<spm::Processor>(api(), u.proto_);
  return u;
}

TargetUnits TargetUnits::deserialize(const std::string& bytes) {
  TargetUnits u;
  const std::string tag = kPiecesTag;
  if (bytes.compare(0, tag.size(), tag) == 0) {
    u.proto_ = bytes.substr(tag.size());
    u.pieces_ = std::make_shared<spm::Processor>(api(), u.proto_);
  } else {
    u.characters_ = Vocabulary::deserialize(bytes);
  }
  return u;
}

std::string TargetUnits::serialize() const { return pieces_ ? kPiecesTag + proto_ : characters_.serialize(); }

std::int64_t TargetUnits::size() const { return pieces_ ? pieces_->piece_size() + 1 : characters_.size(); }

std::vector<std::int64_t> TargetUnits::encode(const std::string& text) const {
  if (!pieces_) return characters_.encode(text);
  std::vector<std::int64_t> out;
  for (int id : pieces_->encode(text)) out.push_back(id + 1);  // SentencePiece's 0 is <unk>: our 1
  return out;
}

std::string TargetUnits::decode(const std::vector<std::int64_t>& ids) const {
  if (!pieces_) return characters_.decode(ids);
  std::vector<int> pieces;
  for (auto id : ids)
    if (id >= 2 && id < size()) pieces.push_back(static_cast<int>(id - 1));  // padding and unknown say nothing
  return pieces_->decode(pieces);
}

}  // namespace workbench::transformer_decoder
