"""The outbox between a stream's relay and its client, on its own: what it
keeps for a client, and when it gives up on one."""
import threading
import time

from app.api.outbox import Outbox


def serve(outbox, taken, pause=0.2):
    """The server's side: after `pause`, takes everything, then closes as a finished response does."""
    def run():
        time.sleep(pause)
        while (data := outbox.take()) is not None:
            taken.append(data)
        outbox.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_last_event_that_came_past_the_deadline_still_reaches_a_reading_client():
    """A stream's error event may come only after its deadline (its settle was
    retried that long): a client that reads is given it, not cut off."""
    outbox, taken = Outbox(idle_seconds=5, deadline=time.monotonic() - 1), []
    assert outbox.put(b"event: error\n\n")
    server = serve(outbox, taken)
    outbox.finish()
    assert outbox.wait_until_closed()
    server.join()
    assert taken == [b"event: error\n\n"] and outbox.delivered


def test_a_client_that_takes_nothing_is_still_given_up_on_past_the_deadline():
    outbox = Outbox(idle_seconds=0.3, deadline=time.monotonic() - 1)
    assert outbox.put(b"event: error\n\n")
    outbox.finish()
    assert not outbox.wait_until_closed()
    assert not outbox.delivered


def test_a_stream_finished_in_time_keeps_its_deadline():
    outbox = Outbox(idle_seconds=30, deadline=time.monotonic() + 0.3)
    outbox.put(b"data: [DONE]\n\n")
    outbox.finish()
    assert outbox.deadline < time.monotonic() + 1
    assert not outbox.wait_until_closed()
