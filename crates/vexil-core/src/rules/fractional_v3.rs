//! placeholder (helper-1 replaces this file)

pub(crate) struct FractionalV3;

impl datalogic_rs::CustomOperator for FractionalV3 {
    fn evaluate<'a>(
        &self,
        _args: &[&'a datalogic_rs::DataValue<'a>],
        _ctx: &mut datalogic_rs::operator::EvalContext<'_, 'a>,
        _arena: &'a bumpalo::Bump,
    ) -> datalogic_rs::Result<&'a datalogic_rs::DataValue<'a>> {
        Ok(_arena.alloc(datalogic_rs::DataValue::Null))
    }
}
