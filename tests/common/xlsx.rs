//! Small Excel workbooks written in the tests themselves (no binary fixtures).

use rust_xlsxwriter::{Format, Workbook};

/// A workbook with a title row above the table (tables rarely start at A1), Chinese
/// column names and one row per entry. `rows` are (id, question, similar, answer).
pub fn workbook(rows: &[(&str, &str, &str, &str)]) -> Vec<u8> {
    let mut wb = Workbook::new();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let notes = wb.add_worksheet();
    notes.set_name("说明").unwrap();
    let ws = wb.add_worksheet();
    ws.set_name("常见问题").unwrap();
    ws.write_string(0, 0, "理财常见问题（2026版）").unwrap();
    for (c, h) in ["编号", "标准问题", "相似问法", "答案", "生效日期"]
        .iter()
        .enumerate()
    {
        ws.write_string(1, c as u16, *h).unwrap();
    }
    for (r, (id, q, sim, a)) in rows.iter().enumerate() {
        let r = r as u32 + 2;
        ws.write_string(r, 0, *id).unwrap();
        ws.write_string(r, 1, *q).unwrap();
        ws.write_string(r, 2, *sim).unwrap();
        ws.write_string(r, 3, *a).unwrap();
        // 2026-01-01 as Excel stores a date: a day number with a date format.
        ws.write_number_with_format(r, 4, 46023.0, &date).unwrap();
    }
    wb.save_to_buffer().unwrap()
}

pub const GOOD: &[(&str, &str, &str, &str)] = &[
    (
        "xl-1",
        "斑马理财产品起购金额是多少",
        "斑马理财最低买多少|斑马理财几块钱起买",
        "斑马理财1元起购。",
    ),
    (
        "xl-2",
        "斑马理财能提前赎回吗",
        "",
        "斑马理财每个工作日可赎回，T+1到账。",
    ),
];
