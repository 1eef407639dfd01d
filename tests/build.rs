//! Generates a tonic client and server for the gRPC tests, as `tonic-build` does for users,
//! with no `.proto` file and no `protoc`: the messages are prost structs in the test itself.

fn main() {
    let check = tonic_build::manual::Method::builder()
        .name("check")
        .route_name("Check")
        .input_type("crate::StockQuery")
        .output_type("crate::StockLevel")
        .codec_path("tonic_prost::ProstCodec")
        .build();
    let stock = tonic_build::manual::Service::builder()
        .name("Stock")
        .package("shop")
        .method(check)
        .build();
    tonic_build::manual::Builder::new().compile(&[stock]);
}
