//! A stream put back together: the whole answer its chunks add up to, as
//! the provider would have answered the same request unstreamed (what the
//! response cache keeps of a streamed answer).

use super::{AssistantMessage, ChatChunk, ChatCompletion, Choice, ToolCall};
use std::collections::BTreeMap;

#[derive(Default)]
struct Assembling {
    content: String,
    reasoning: String,
    /// By the deltas' tool-call index.
    tool_calls: BTreeMap<u32, ToolCall>,
    finish_reason: Option<super::FinishReason>,
}

/// The answer of a stream of OpenAI `chat.completion.chunk` events (SSE
/// bytes, `[DONE]` and comments allowed); `None` when it holds no chunk.
pub fn from_events(events: &[u8]) -> Option<ChatCompletion> {
    let chunks = events
        .split(|b| *b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data:"))
        .filter_map(|data| serde_json::from_slice::<ChatChunk>(data.trim_ascii()).ok());
    assemble(chunks)
}

pub fn assemble(chunks: impl IntoIterator<Item = ChatChunk>) -> Option<ChatCompletion> {
    let mut head: Option<ChatCompletion> = None;
    let mut choices: BTreeMap<u32, Assembling> = BTreeMap::new();
    for chunk in chunks {
        let answer = head.get_or_insert_with(|| ChatCompletion {
            id: chunk.id.clone(),
            object: "chat.completion".to_owned(),
            created: chunk.created,
            model: chunk.model.clone(),
            choices: Vec::new(),
            usage: None,
        });
        if chunk.usage.is_some() {
            answer.usage = chunk.usage;
        }
        for choice in chunk.choices {
            let into = choices.entry(choice.index).or_default();
            let delta = choice.delta;
            into.content
                .push_str(delta.content.as_deref().unwrap_or_default());
            into.reasoning
                .push_str(delta.reasoning_content.as_deref().unwrap_or_default());
            for call in delta.tool_calls.unwrap_or_default() {
                let function = call.function;
                let into = into.tool_calls.entry(call.index).or_insert_with(|| {
                    ToolCall::new(
                        call.id.clone().unwrap_or_default(),
                        String::new(),
                        String::new(),
                    )
                });
                if let Some(id) = call.id {
                    into.id = id;
                }
                into.function
                    .name
                    .push_str(function.name.as_deref().unwrap_or_default());
                into.function
                    .arguments
                    .push_str(function.arguments.as_deref().unwrap_or_default());
            }
            if choice.finish_reason.is_some() {
                into.finish_reason = choice.finish_reason;
            }
        }
    }
    let mut answer = head?;
    answer.choices = choices
        .into_iter()
        .map(|(index, choice)| {
            let mut message =
                AssistantMessage::new(choice.content, choice.tool_calls.into_values().collect());
            message.reasoning_content = (!choice.reasoning.is_empty()).then_some(choice.reasoning);
            Choice {
                index,
                message,
                finish_reason: choice.finish_reason,
            }
        })
        .collect();
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ChunkBuilder, FinishReason};
    use shared::usage::TokenUsage;

    #[test]
    fn chunks_assemble_into_the_whole_answer() {
        let builder = ChunkBuilder::new("chatcmpl-1".into(), "gpt".into());
        let chunks = vec![
            builder.role(),
            builder.text("Hel".into()),
            builder.text("lo".into()),
            builder.tool_call_start(0, "call_1".into(), "get_weather".into()),
            builder.tool_arguments(0, "{\"city\":".into()),
            builder.tool_arguments(0, "\"Paris\"}".into()),
            builder.finish(FinishReason::ToolCalls),
            builder.usage(TokenUsage::new(3, 4)),
        ];
        let answer = assemble(chunks).expect("an answer");
        assert_eq!(answer.usage, Some(TokenUsage::new(3, 4)));
        let choice = &answer.choices[0];
        assert_eq!(choice.message.content.as_deref(), Some("Hello"));
        let calls = choice.message.tool_calls.as_deref().expect("tool calls");
        assert_eq!(
            calls,
            [ToolCall::new(
                "call_1".into(),
                "get_weather".into(),
                "{\"city\":\"Paris\"}".into()
            )]
        );
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        let events = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n: comment\n\ndata: [DONE]\n\n";
        let answer = from_events(events).expect("an answer");
        assert_eq!(answer.choices[0].message.content.as_deref(), Some("Hi"));
        assert!(from_events(b"data: [DONE]\n\n").is_none());
    }
}
