from tests.support.pipeline import ALPHA, Pipeline, message, strip_trace


def test_one_message_reaches_its_server(pipeline: Pipeline) -> None:
    content = message("smoke")
    code, text = pipeline.send("app@sender.test", ["someone@alpha.test"], content)
    assert code == 250, text
    received = pipeline.sink.wait_for(lambda m: len(m) == 1, 20, "the message")
    assert received[0].host == ALPHA
    assert received[0].recipients == ("someone@alpha.test",)
    assert strip_trace(received[0].content) == content
