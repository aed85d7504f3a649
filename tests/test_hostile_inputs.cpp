// Hostile inputs (docs/reliability.md has the table): each damaged file under tests/data/hostile/ (made by
// make_cases.py there), each bad transcript, manifest, experiment file and checkpoint gives a clear error
// naming the file and the problem. Through the real executable, each also gives exit code 1 and a run
// recorded `failed` with that message; never a crash.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "run_support.h"
#include "test_support.h"
#include "tone_manifest.h"
#include "workbench/audio.h"
#include "workbench/run_store.h"
#include "workbench/text.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;
using results::RunStore;

namespace {

const std::string kHostile = WORKBENCH_TEST_DATA_DIR "/hostile/";

std::string audio_error(const std::string& path, double max_seconds = kMaxAudioSeconds) {
  try {
    read_audio(path, max_seconds);
  } catch (const AudioError& e) {
    return e.what();
  }
  return "(no error)";
}

// A WAV header of 16-bit mono 16 kHz PCM for `data_bytes` of samples.
std::string wav_header(std::uint32_t data_bytes) {
  std::string h;
  auto u32 = [&](std::uint32_t v) {
    for (int i = 0; i < 4; ++i) h += static_cast<char>((v >> (8 * i)) & 0xff);
  };
  auto u16 = [&](std::uint16_t v) {
    h += static_cast<char>(v & 0xff);
    h += static_cast<char>(v >> 8);
  };
  h += "RIFF";
  u32(36 + data_bytes);
  h += "WAVEfmt ";
  u32(16);
  u16(1);
  u16(1);
  u32(16000);
  u32(32000);
  u16(2);
  u16(16);
  h += "data";
  u32(data_bytes);
  return h;
}

std::string experiment(const std::string& manifest, const std::string& extra = "") {
  return "[experiment]\nname = \"hostile\"\n\n[data.train]\nplugin = \"manifest\"\npath = \"" + manifest +
         "\"\n\n[model.speech_encoder]\nplugin = \"conformer\"\nd_model = 16\nheads = 2\nlayers = 1\nffn_dim = 32\n"
         "kernel_size = 3\nsubsampling_channels = 4\n\n[objectives.ctc]\nplugin = \"ctc\"\n\n"
         "[trainer]\nsteps = 1\nthreads = 1\nprogress = \"none\"\n" + extra;
}

}  // namespace

TEST_CASE("hostile audio: each damaged file is refused by read_audio, naming it and the damage", "[hostile][audio]") {
  for (const char* good : {"good.wav", "good.flac", "good.ogg"}) {
    INFO(good);
    Audio a = read_audio(kHostile + good);
    CHECK(a.sample_rate == 16000);
    CHECK(a.samples.size() == 16000);
  }
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"truncated.wav", "truncated: its data chunk says 32000 bytes, the file holds"},
      {"truncated.flac", "truncated or corrupt: its header promises 16000 frames"},
      {"truncated.ogg", "contains no audio frames"},
      {"corrupt.flac", "truncated or corrupt: its header promises 16000 frames"},
      {"corrupt.ogg", "malformed"},
      {"lying_header.wav", "truncated: its data chunk says 2147483632 bytes, the file holds 32000"},
      {"empty.wav", "the file is empty (0 bytes)"},
      {"no_frames.wav", "contains no audio frames"},
      {"not_audio.flac", "Format not recognised"},
  };
  for (const auto& [file, expected] : cases) {
    INFO(file);
    const std::string msg = audio_error(kHostile + file);
    CHECK_THAT(msg, Contains(kHostile + file) && Contains(expected));
  }
  // A float WAV with a NaN and one with an infinity among its samples (found by fuzz_audio): libsndfile
  // passes float data through as stored.
  {
    TempDir floats("wbtest_hostile_float_");
    auto float_wav = [&](const std::string& name, float bad) {
      std::vector<float> samples(1600, 0.25f);
      samples[800] = bad;
      const std::uint32_t data = static_cast<std::uint32_t>(samples.size() * 4);
      std::string bytes = "RIFF";
      auto u32 = [&](std::uint32_t v) { bytes.append(reinterpret_cast<const char*>(&v), 4); };
      auto u16 = [&](std::uint16_t v) { bytes.append(reinterpret_cast<const char*>(&v), 2); };
      u32(36 + data);
      bytes += "WAVEfmt ";
      u32(16), u16(3), u16(1), u32(16000), u32(16000 * 4), u16(4), u16(32);  // IEEE float, mono, 16 kHz
      bytes += "data";
      u32(data);
      bytes.append(reinterpret_cast<const char*>(samples.data()), data);
      write_file(floats.file(name), bytes);
      return floats.file(name);
    };
    const std::string nan = float_wav("nan.wav", std::numeric_limits<float>::quiet_NaN());
    CHECK_THAT(audio_error(nan), Contains(nan) && Contains("sample 800 (0.050 s) is NaN"));
    const std::string inf = float_wav("inf.wav", std::numeric_limits<float>::infinity());
    CHECK_THAT(audio_error(inf), Contains(inf) && Contains("sample 800 (0.050 s) is infinite"));
    CHECK(read_audio(float_wav("fine.wav", 0.5f)).samples.size() == 1600);
  }
  // Sub-frame audio decodes (160 samples); the run refuses it (below), where the frame length is known,
  // and so does `workbench inspect-audio`, naming it.
  CHECK(read_audio(kHostile + "subframe.wav").samples.size() == 160);
  TempDir dir("wbtest_hostile_inspect_");
  CommandResult inspect = run_workbench(dir, {"inspect-audio", kHostile + "subframe.wav"});
  CHECK(inspect.exit_code != 0);
  CHECK_THAT(inspect.err, Contains(kHostile + "subframe.wav") && Contains("fewer than one window"));
}

TEST_CASE("hostile audio: a 2-hour file is refused by its header before anything is decoded", "[hostile][audio]") {
  TempDir dir("wbtest_hostile_");
  // A real 2-hour WAV of silence, sparse on disk: the header, then 230 MB of zeros nobody writes.
  const std::string path = dir.file("two_hours.wav");
  const std::uint32_t bytes = 2u * 3600u * 16000u * 2u;
  write_file(path, wav_header(bytes));
  fs::resize_file(path, 44 + static_cast<std::uintmax_t>(bytes));
  CHECK(probe_audio(path).frames == 2 * 3600 * 16000);
  const std::string msg = audio_error(path);
  CHECK_THAT(msg, Contains(path) && Contains("its header says it is 7200 s long, over the limit of 3600 s"));
  // The limit is the caller's: a 1 s file under a 0.5 s limit.
  CHECK_THAT(audio_error(kHostile + "good.wav", 0.5), Contains("over the limit of"));
  CHECK_THAT(audio_error(kHostile + "good.flac", 0.5), Contains("over the limit of"));
}

TEST_CASE("invalid_utf8_at: the first byte of a malformed sequence", "[hostile][text]") {
  CHECK(invalid_utf8_at("") == std::string::npos);
  CHECK(invalid_utf8_at("plain ascii") == std::string::npos);
  CHECK(invalid_utf8_at("été, привет, 日本, 😀") == std::string::npos);
  CHECK(invalid_utf8_at("ab\xff" "cd") == 2);            // never valid
  CHECK(invalid_utf8_at("ab\xc3") == 2);                 // cut short
  CHECK(invalid_utf8_at("a\xc3(") == 1);                 // bad continuation
  CHECK(invalid_utf8_at("\xc0\xaf") == 0);               // overlong '/'
  CHECK(invalid_utf8_at("x\xed\xa0\x80") == 1);          // a UTF-16 surrogate
  CHECK(invalid_utf8_at("\xf4\x90\x80\x80") == 0);       // above U+10FFFF
  CHECK(invalid_utf8_at("\xe2\x82\xac") == std::string::npos);  // the euro sign
}

TEST_CASE("e2e: hostile inputs end as failed runs with the file and the problem, exit 1, never a crash",
          "[e2e][hostile]") {
  TempDir dir("wbtest_hostile_e2e_");
  const std::string good = write_manifest(dir, 3);  // manifest.tsv with three good tones
  const std::string good_rows = read_file(good).substr(read_file(good).find('\n') + 1);
  const std::string db = dir.file("runs.db");
  int runs = 0;

  // Runs `exp_text` (written to <name>.toml) and checks the outcome: exit 1, the message on stderr and in
  // the run store's failed run.
  auto expect_failed_run = [&](const std::string& name, const std::string& exp_text,
                               const std::vector<std::string>& expected) {
    INFO(name);
    const std::string exp = dir.file(name + ".toml");
    write_file(exp, exp_text);
    CommandResult r = run_workbench(dir, {"run", exp, "--db", db});
    INFO(r.err);
    CHECK(r.exit_code == 1);
    ++runs;
    RunStore store(db);
    const auto all = store.runs();
    REQUIRE(static_cast<int>(all.size()) == runs);
    CHECK(all.back().status == "failed");
    for (const auto& e : expected) {
      CHECK_THAT(r.err, Contains(e));
      CHECK_THAT(all.back().error_message, Contains(e));
    }
  };
  // A manifest of the good rows and one more row.
  auto manifest_with = [&](const std::string& name, const std::string& row) {
    const std::string path = dir.file(name + ".tsv");
    write_file(path, "id\tpath\ttext\tlang\n" + good_rows + row);
    return path;
  };

  SECTION("damaged audio files among good ones") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"truncated.wav", "truncated"},       {"truncated.flac", "truncated or corrupt"},
        {"truncated.ogg", "no audio frames"}, {"corrupt.flac", "truncated or corrupt"},
        {"corrupt.ogg", "malformed"},         {"lying_header.wav", "its data chunk says"},
        {"empty.wav", "empty (0 bytes)"},     {"no_frames.wav", "no audio frames"},
        {"not_audio.flac", "not recognised"}, {"subframe.wav", "shorter than one 25 ms frame"},
    };
    for (const auto& [file, why] : cases) {
      const std::string m = manifest_with(fs::path(file).stem().string() + "_" + fs::path(file).extension().string().substr(1),
                                          "bad\t" + kHostile + file + "\tab\tzz\n");
      expect_failed_run("audio_" + file, experiment(m), {kHostile + file, why});
    }
    // With on_bad_audio = "skip" the same files are left out and counted, and the run trains.
    std::string rows;
    for (const auto& [file, why] : cases) rows += "bad_" + file + "\t" + kHostile + file + "\tab\tzz\n";
    const std::string m = manifest_with("all_bad", rows);
    const std::string exp = dir.file("skip.toml");
    std::string text = experiment(m);
    text.insert(text.find("\n\n[model"), "\non_bad_audio = \"skip\"");
    write_file(exp, text);
    CommandResult r = run_workbench(dir, {"run", exp, "--db", db});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    ++runs;
    RunStore store(db);
    const auto id = std::to_string(store.runs().back().id);
    CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id +
                            " AND key = 'derived.data.train.skipped_audio'") ==
          std::optional<std::string>(std::to_string(cases.size()) + ".0"));
    CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id +
                            " AND key = 'derived.data.train.utterances'") == std::optional<std::string>("3.0"));
    for (const auto& [file, why] : cases) CHECK_THAT(r.err, Contains("skipped " + kHostile + file));
  }

  SECTION("transcripts and manifests") {
    const std::string audio = dir.file("audio/utt0.wav");
    expect_failed_run("empty_text", experiment(manifest_with("empty_text", "e\t" + audio + "\t\tzz\n")),
                      {"empty_text.tsv:5", "the transcript is empty", "allow_empty_text"});
    expect_failed_run("extra_column", experiment(manifest_with("extra_column", "e\t" + audio + "\tab\t \tzz\n")),
                      {"extra_column.tsv:5", "expected 4 tab-separated columns, found 5"});
    expect_failed_run("space_text", experiment(manifest_with("space_text", "e\t" + audio + "\t   \tzz\n")),
                      {"space_text.tsv:5", "the transcript is empty (only white space)"});
    expect_failed_run("bad_utf8", experiment(manifest_with("bad_utf8", "u\t" + audio + "\tab\xff\xfe" "c\tzz\n")),
                      {"bad_utf8.tsv:5", "the text column is not valid UTF-8 (byte 0xff at byte 3"});
    const std::string no_lang = dir.file("no_lang.tsv");
    write_file(no_lang, "id\tpath\ttext\nx\t" + audio + "\tab\n");
    expect_failed_run("no_lang", experiment(no_lang), {no_lang + ":1", "the header has no 'lang' column"});
    // A column named twice: it used to be reported at every row as a wrong number of columns.
    const std::string twice = dir.file("twice.tsv");
    write_file(twice, "id\tpath\ttext\ttext\tlang\nx\t" + audio + "\tab\tba\tzz\n");
    expect_failed_run("twice", experiment(twice), {twice + ":1", "the header names the column 'text' twice"});
    const std::string missing = dir.file("audio/not_there.wav");
    expect_failed_run("missing_audio", experiment(manifest_with("missing_audio", "m\t" + missing + "\tab\tzz\n")),
                      {missing, "No such file"});
    expect_failed_run("no_manifest", experiment(dir.file("nowhere.tsv")), {dir.file("nowhere.tsv")});
    // allow_empty_text keeps the row; paired training leaves it out, and the run trains.
    std::string text = experiment(manifest_with("allowed", "e\t" + audio + "\t\tzz\n"));
    text.insert(text.find("\n\n[model"), "\nallow_empty_text = true");
    write_file(dir.file("allowed.toml"), text);
    CommandResult r = run_workbench(dir, {"run", dir.file("allowed.toml"), "--db", db});
    INFO(r.err);
    CHECK(r.exit_code == 0);
  }

  SECTION("experiment files") {
    const std::string base = experiment(good);
    expect_failed_run("duplicate_key", base + "steps = 2\n", {"duplicate_key.toml:", "steps"});
    std::string wrong_type = base;
    wrong_type.replace(wrong_type.find("d_model = 16"), 12, "d_model = \"sixteen\"");
    expect_failed_run("wrong_type", wrong_type, {"wrong_type.toml:", "d_model"});
    std::string negative = base;
    negative.replace(negative.find("layers = 1"), 10, "layers = -2");
    expect_failed_run("negative", negative, {"negative.toml:", "layers"});
    std::string absurd = base;
    absurd.replace(absurd.find("d_model = 16"), 12, "d_model = 4000000000");
    expect_failed_run("absurd", absurd, {"absurd.toml:", "d_model"});
    std::string zero_steps = base;
    zero_steps.replace(zero_steps.find("steps = 1"), 9, "steps = -5");
    expect_failed_run("negative_steps", zero_steps, {"negative_steps.toml:", "steps"});
  }

  SECTION("checkpoints: truncated, not a checkpoint") {
    // A real checkpoint first.
    const std::string ok = dir.file("ok.toml");
    write_file(ok, experiment(good, "checkpoint_dir = \"" + dir.file("ckpt") + "\"\n"));
    CommandResult r = run_workbench(dir, {"run", ok, "--db", db});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    ++runs;
    const std::string final_pt = RunStore(db).checkpoints(runs).back().path;
    const std::string bytes = read_file(final_pt);
    const std::string cut = dir.file("cut.pt");
    write_file(cut, bytes.substr(0, bytes.size() / 2));
    expect_failed_run("truncated_checkpoint", experiment(good, "") + "\n[init]\ncheckpoint = \"" + cut + "\"\n",
                      {cut});
    const std::string text_file = dir.file("not_a_checkpoint.pt");
    write_file(text_file, "hello\n");
    expect_failed_run("not_a_checkpoint", experiment(good, "") + "\n[init]\ncheckpoint = \"" + text_file + "\"\n",
                      {text_file});
  }
  CHECK(scalar(RunStore(db), "PRAGMA integrity_check") == std::optional<std::string>("ok"));
}
