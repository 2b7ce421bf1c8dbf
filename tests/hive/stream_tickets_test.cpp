#include <doctest/doctest.h>
#include <rbee/hive/stream_tickets.hpp>

using rbee::hive::StreamTickets;

TEST_CASE("a stream ticket admits its own job's stream, again and again, until it expires") {
  StreamTickets tickets;
  const auto now = StreamTickets::Clock::now();
  const std::string ticket = tickets.issue("job-a", now).value();
  CHECK(ticket.starts_with("st-"));
  CHECK(ticket.size() == 3 + 32);
  CHECK(tickets.admits(ticket, "job-a", now));
  CHECK(tickets.admits(ticket, "job-a", now + std::chrono::seconds(30)));  // EventSource reconnects
  CHECK_FALSE(tickets.admits(ticket, "job-b", now));                       // another job's stream
  CHECK_FALSE(tickets.admits(ticket, "job-a", now + StreamTickets::kLifetime));
  CHECK_FALSE(tickets.admits("st-00000000000000000000000000000000", "job-a", now));
  CHECK(tickets.issue("job-a", now) != ticket);
}

TEST_CASE("stream tickets are capped: beyond the cap issue refuses until tickets expire") {
  StreamTickets tickets(2);
  const auto now = StreamTickets::Clock::now();
  CHECK(tickets.issue("job-a", now));
  CHECK(tickets.issue("job-a", now));
  CHECK_FALSE(tickets.issue("job-a", now));
  CHECK(tickets.issue("job-a", now + StreamTickets::kLifetime));  // the first two expired
}
