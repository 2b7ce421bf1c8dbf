#pragma once
// How a job's event log is written on the wire: two profiles of one log (README "The stream").
//
//  - standard: a request whose Accept names text/event-stream (browsers' EventSource, every SSE
//    library, this hive's own terminal client). `id:` lines, one JSON `data:` line per event,
//    `: ping` comments, replay and Last-Event-ID.
//  - rbee: anything else (rbee-keeper, queen-rbee and rbee's UI send `Accept: */*`; plain curl).
//    rbee's JobClient hands every non-empty line but `data:` prefixes to its caller, so this
//    profile writes only what rbee's own hive writes (bin/20_rbee_hive/src/http/jobs.rs): each
//    narration as a bold function name and dim action, then the human sentence; data events as
//    `event: data` + `{"action","payload"}`; the same terminal markers; no ids, no comments.
//    A job that has said nothing for a second narrates that it is waiting, because queen-rbee
//    ends a stream that stays silent for two.

#include <chrono>
#include <string>
#include <string_view>

#include <rbee/jobs/event_log.hpp>
#include <rbee/jobs/job.hpp>

namespace rbee::hive {

enum class StreamProfile { standard, rbee };

// In rbee's profile a job that has written nothing for this long says it is still running:
// queen-rbee ends a stream silent for 2 s, and progress narration comes about every second,
// so a job that narrates progress never says it.
inline constexpr std::chrono::milliseconds kRbeeIdleInterval{1500};

// `accept`: every Accept header value of the request, joined by commas.
StreamProfile stream_profile_for(std::string_view accept);

// The bytes of one event of the job's log in this profile.
std::string format_event(StreamProfile profile, const jobs::LogEntry& entry);

// What a stream writes after an idle interval: a `: ping` comment (standard), or a narration
// of what the job is waiting for (rbee).
std::string format_idle(StreamProfile profile, const jobs::Job& job);

}  // namespace rbee::hive
